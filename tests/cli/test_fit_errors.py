"""Bad configs are refused before launch, with the key path, what was given and what is accepted.

In-process: ``flashdist.cli.fit.run`` must return 2 with one message on stderr, and neither
``Trainer.fit`` (which launches the other ranks) nor ``subprocess.Popen`` may be reached.
"""

from __future__ import annotations

import subprocess

import pytest

import flashdist.runtime.trainer
from flashdist.cli.fit import run
from tests.cli.cli_runs import CONFIGS

QUICKSTART = (CONFIGS / "quickstart.yaml").read_text()


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything would start training or another process."""

    def refuse(*args, **kwargs):
        raise AssertionError("a bad config reached launch")

    monkeypatch.setattr(flashdist.runtime.trainer.Trainer, "fit", refuse)
    monkeypatch.setattr(flashdist.runtime.trainer.Trainer, "validate", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


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
                                          ["model.init_args.optimizer", "eps='1e-8' is a string", "eps: 1e-08"]),
    "unknown class": (edit("flashdist.image.ImageClassifier", "flashdist.image.ImageClassifer"),
                      ["model.class_path='flashdist.image.ImageClassifer'", "no attribute 'ImageClassifer'"]),
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
