"""Bad configs are refused before launch, with the key path, what was given and what is accepted.

In-process: ``flashdist.cli.fit.run`` must return 2 with one message on stderr, and neither
``Trainer.fit`` (which launches the other ranks) nor ``subprocess.Popen`` may be reached.
"""

from __future__ import annotations

import functools
import subprocess

import pytest

import flashdist.runtime.trainer
from flashdist.cli.fit import run
from tests.cli.cli_runs import CONFIGS

QUICKSTART = (CONFIGS / "quickstart.yaml").read_text()


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything would start training or another process (signatures kept: the CLI reads them)."""

    def refusing(original):
        @functools.wraps(original)
        def refuse(*args, **kwargs):
            raise AssertionError("a bad config reached launch")

        return refuse

    trainer = flashdist.runtime.trainer.Trainer
    monkeypatch.setattr(trainer, "fit", refusing(trainer.fit))
    monkeypatch.setattr(trainer, "validate", refusing(trainer.validate))
    monkeypatch.setattr(subprocess, "Popen", refusing(subprocess.Popen))


def refused(tmp_path, capsys, text: str, *overrides: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert run(["fit", "--config", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    # Lightning may warn first (e.g. about an unused `srun`); the error is one message, no traceback.
    assert "flashdist fit: error: " in err and "Traceback" not in err, err
    return err[err.index("flashdist fit: error: "):]


def edit(old: str, new: str) -> str:
    assert old in QUICKSTART, old
    return QUICKSTART.replace(old, new, 1)


# (config text, fragments the message must contain)
CASES = {
    "unknown trainer key": (edit("max_epochs: 4", "max_epoch: 4"), ["'trainer.max_epoch'", "Accepted:", "'max_epochs'", "did you mean 'max_epochs'"]),
    "unknown model key": (edit("backbone: resnet_tiny", "backbonee: resnet_tiny"),
                          ["'model.init_args.backbonee'", "Accepted: 'num_classes', 'backbone'", "did you mean 'backbone'"]),
    "unknown section": (QUICKSTART + "trainr:\n  max_epochs: 1\n", ["unknown section 'trainr'", "'trainer'", "'model'", "'data'"]),
    "wrong trainer type": (edit("max_epochs: 4", "max_epochs: four"), ["trainer.max_epochs", "four", "Accepted: int | null"]),
    "wrong model type": (edit("num_classes: 4\n    backbone", "num_classes: 4.5\n    backbone"), ["model.init_args.num_classes", "4.5", "Accepted: int"]),
    "learning rate not a number": (edit("learning_rate: 3.0e-3", "learning_rate: fast"), ["model.init_args.learning_rate", "fast", "float"]),
    "optimizer as a mapping": (edit("optimizer: adamw", "optimizer: {name: adam}"),
                               ["model.init_args.optimizer", "{'name': 'adam'}", "str | tuple | list", "[name, {kwargs}]"]),
    "unknown optimizer": (edit("optimizer: adamw", "optimizer: adamm"), ["model.init_args.optimizer='adamm'", "did you mean 'adam'"]),
    "unknown optimizer kwarg": (edit("optimizer: adamw", "optimizer: [adam, {amsgrad: true, betas1: 0.9}]"),
                                ["model.init_args.optimizer=[", "unknown argument 'betas1'", "'betas'"]),
    "unknown scheduler": (edit("cosine_schedule_with_warmup,", "cosine_schedule_with_warmpu,"),
                          ["model.init_args.lr_scheduler=['cosine_schedule_with_warmpu'", "did you mean 'cosine_schedule_with_warmup'"]),
    "plateau without monitor": (edit("[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]", "[reducelronplateau, {mode: max}]"),
                                ["model.init_args.lr_scheduler", "no 'monitor' was given"]),
    "bad lightning config key": (edit("[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]",
                                      "[reducelronplateau, {mode: max}, {monitr: val_accuracy}]"),
                                 ["model.init_args.lr_scheduler", "'monitr'", "'monitor'"]),
    "quoted number in optimizer kwargs": (edit("optimizer: adamw", 'optimizer: [adamw, {eps: "1e-8"}]'),
                                          ["model.init_args.optimizer", "eps='1e-8': a string", "eps: 1e-08"]),
    "unknown class": (edit("flashdist.image.ImageClassifier", "flashdist.image.ImageClassifer"),
                      ["model.class_path='flashdist.image.ImageClassifer'", "no attribute 'ImageClassifer'", "did you mean 'flashdist.image.ImageClassifier'"]),
    "bad backbone": (edit("backbone: resnet_tiny", "backbone: resnet_tinyy"), ["model.init_args (flashdist.image.ImageClassifier)", "'resnet_tiny'"]),
    "bad data value": (edit("image_size: 16", "image_size: 0"), ["data.init_args (flashdist.data.SyntheticImageDataModule)", "image_size=0"]),
    "num_classes mismatch": (edit("num_classes: 4\n    num_samples", "num_classes: 5\n    num_samples"),
                             ["model.init_args.num_classes=4", "has 5 classes", "num_classes: 5"]),
    "unknown strategy": (edit("strategy: ddp", "strategy: deepspeed_stage_9"), ["trainer", "'deepspeed_stage_9'", "'deepspeed_stage_2'"]),
    "bad resume policy": (edit("max_epochs: 4", "max_epochs: 4\n  resume_policy: sometimes"),
                          ["trainer.resume_policy", "sometimes", "'strict', 'keep_schedule', 'rescale'"]),
    "invalid yaml": (edit("max_epochs: 4", "max_epochs: [4"), ["not valid YAML", "bad.yaml", "line"]),
}


@pytest.mark.parametrize("text, fragments", list(CASES.values()), ids=list(CASES))
def test_bad_config_is_refused_before_launch_naming_the_key(tmp_path, capsys, no_launch, text, fragments):
    err = refused(tmp_path, capsys, text)
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from:\n{err}"


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("--trainer.max_epoch=1", ["'trainer.max_epoch'", "did you mean 'max_epochs'", "the command line"]),  # no abbreviations
        ("--model.init_args.optimzer=adam", ["'model.init_args.optimzer'", "did you mean 'optimizer'"]),
        ("--model.init_args.lr_scheduler=[steplr, {step_sise: 2}]", ["model.init_args.lr_scheduler", "'step_sise'", "'step_size'"]),
    ],
)
def test_bad_command_line_override_is_refused(tmp_path, capsys, no_launch, override, fragments):
    err = refused(tmp_path, capsys, QUICKSTART, override)
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from:\n{err}"


def test_missing_config_file_and_missing_sections(capsys, no_launch):
    assert run(["fit", "--config", "configs/no_such.yaml"]) == 2
    assert "config file" in capsys.readouterr().err
    assert run(["fit"]) == 2
    err = capsys.readouterr().err
    assert "needs the section(s) ['data', 'model']" in err and "--config configs/quickstart.yaml" in err


# DeepSpeed/FSDP config errors: refused in the launching process (not once per rank), rc 2.
_ZERO2 = {"zero_optimization": {"stage": 2}}
STRATEGY_CASES = {
    "deepspeed auto flashdist cannot fill": (
        {"zero_optimization": {"stage": 2, "sub_group_size": "auto"}, "steps_per_print": "auto"}, [],
        ["'auto' values flashdist cannot fill: ['zero_optimization.sub_group_size', 'steps_per_print']", "HINT"]),
    "deepspeed clipping contradicts the trainer": (
        {**_ZERO2, "gradient_clipping": 1.0}, ["--trainer.gradient_clip_val=0.5"],
        ["gradient_clipping=1.0 contradicts Trainer(gradient_clip_val=...) = 0.5"]),
    "deepspeed bf16 contradicts the trainer": (
        {**_ZERO2, "bf16": {"enabled": True}}, [], ["bf16.enabled=True contradicts Trainer(precision='32-true')"]),
    "deepspeed optimizer in both places": (
        {**_ZERO2, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}, [],
        ["optimizer is given both in the DeepSpeed config ('AdamW') and on the Task (optimizer=adamw())"]),
    # The plan-dependent keys, from the DataModule's batch size (32) × accumulation (1) × 2 ranks.
    "deepspeed train_batch_size contradicts the data": (
        {**_ZERO2, "train_batch_size": 999}, [],
        ["train_batch_size=999 contradicts batch_size × accumulate_grad_batches × data-parallel size = 64"]),
    "deepspeed clips by value": (
        "deepspeed_stage_2", ["--trainer.gradient_clip_val=0.5", "--trainer.gradient_clip_algorithm=value"],
        ["gradient_clip_algorithm='value' with a DeepSpeed strategy", "gradient_clip_algorithm='norm'"]),
    "float16 autocast on cpu": ("fsdp", ["--trainer.precision=16-mixed"], ["precision='16-mixed' (float16 AMP) does not run on CPU", "bf16-mixed"]),
}


@pytest.mark.parametrize("strategy, overrides, fragments", list(STRATEGY_CASES.values()), ids=list(STRATEGY_CASES))
def test_bad_strategy_config_is_refused_once_before_launch(tmp_path, capsys, no_launch, strategy, overrides, fragments):
    import json

    if isinstance(strategy, dict):
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(strategy))
        strategy = str(path)
    err = refused(tmp_path, capsys, QUICKSTART, f"--trainer.strategy={strategy}", *overrides)
    assert err.count("flashdist fit: error:") == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from:\n{err}"


@pytest.mark.multiprocess
def test_a_bad_deepspeed_json_under_the_real_cli_prints_one_message_and_starts_no_rank(tmp_path):
    # Before the check moved to the launching process, this error was raised inside each rank
    # and printed four times for two ranks.
    import json

    from tests.cli.cli_runs import config_copy, flashdist_fit

    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 3, "sub_group_size": "auto"}, "gradient_clipping": "auto"}))
    proc = flashdist_fit(config_copy("quickstart.yaml", tmp_path), f"--trainer.strategy={bad}")
    stdout, stderr = proc.communicate(timeout=240)
    output = stdout + stderr
    assert proc.returncode == 2, output
    assert output.count("error:") == 1 and "cannot fill: ['zero_optimization.sub_group_size']" in output, output
    assert "Initializing distributed" not in output and "Traceback" not in output, output  # no rank was set up


def test_param_groups_and_layer_decay_from_yaml(tmp_path):
    from flashdist.cli.fit import build_cli

    text = QUICKSTART.replace("    optimizer: adamw\n", "    optimizer: adamw\n    layer_decay: 0.75\n"
                              "    param_groups:\n      - {match: classifier, lr_scale: 10.0, weight_decay: 0.0}\n", 1)
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    cli = build_cli(["fit", "--config", str(path)], run=False)
    assert cli.model.grouping.layer_decay == 0.75
    assert [(r.match, r.lr_scale, r.weight_decay) for r in cli.model.grouping.rules] == [("classifier", 10.0, 0.0)]


def test_a_param_groups_regex_matching_nothing_is_refused_from_yaml(tmp_path, capsys, no_launch):
    text = QUICKSTART.replace("    optimizer: adamw\n", "    optimizer: adamw\n    param_groups: [{match: backbonee, lr_scale: 0.1}]\n", 1)
    err = refused(tmp_path, capsys, text)
    assert "model.init_args (flashdist.image.ImageClassifier)" in err and "match='backbonee' matches no trainable parameter" in err, err
