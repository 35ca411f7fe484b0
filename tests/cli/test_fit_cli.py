"""``flashdist fit`` / ``validate`` in-process: the spec's forms from YAML and the command line,
--print_config, --help, Trainer extras from YAML, and a single-process validate run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from flashdist.cli.fit import build_cli, run
from tests.cli.cli_runs import CONFIGS, REPO

QUICKSTART = (CONFIGS / "quickstart.yaml").read_text()
SCHEDULER_LINE = "    lr_scheduler: [cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]"


def quickstart_with(tmp_path, old: str, new: str):
    assert old in QUICKSTART
    path = tmp_path / "run.yaml"
    path.write_text(QUICKSTART.replace(old, new, 1).replace("runs/quickstart", str(tmp_path / "run")))
    return path


@pytest.mark.parametrize(
    "optimizer, lr_scheduler, expected_optimizer, expected_scheduler, expected_config",
    [
        ("adamw", "[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]", "adamw()", "cosine_schedule_with_warmup(num_warmup_steps=0.1)", {"interval": "step"}),
        ("[adam, {amsgrad: true}]", "constant_schedule", "adam(amsgrad=True)", "constant_schedule()", None),
        ("[sgd, {momentum: 0.9, nesterov: true}]", "[steplr, {step_size: 2}]", "sgd(momentum=0.9, nesterov=True)", "steplr(step_size=2)", {"interval": "epoch"}),
        ("Adam", "[reducelronplateau, {mode: max}, {monitor: val_accuracy}]", "adam()", "reducelronplateau(mode='max')", {"monitor": "val_accuracy"}),
        ("[adamw, {eps: 1e-8}]", "[linear_schedule_with_warmup, {num_warmup_steps: 2ep}, {interval: step}]", "adamw(eps=1e-08)", None, {"interval": "step"}),
    ],
)
def test_every_spec_form_from_yaml_reaches_the_task(tmp_path, optimizer, lr_scheduler, expected_optimizer, expected_scheduler, expected_config):
    path = quickstart_with(tmp_path, "optimizer: adamw\n" + SCHEDULER_LINE, f"optimizer: {optimizer}\n    lr_scheduler: {lr_scheduler}")
    cli = build_cli(["fit", "--config", str(path)], run=False)
    assert cli.model.optimizer_spec.describe() == expected_optimizer
    if expected_scheduler is not None:
        assert cli.model.scheduler_spec.describe() == expected_scheduler
    for key, value in (expected_config or {}).items():
        assert cli.model.scheduler_spec.lightning_config[key] == value


def test_command_line_overrides_every_form_and_trainer_extras(tmp_path):
    path = quickstart_with(tmp_path, "max_epochs: 4", "max_epochs: 4")
    cli = build_cli(
        ["fit", "--config", str(path), "--trainer.max_epochs=1", "--trainer.strict_ledger=false", "--trainer.resume_policy=rescale",
         "--model.init_args.optimizer=[adam, {amsgrad: true}]",
         "--model.init_args.lr_scheduler=[reducelronplateau, {mode: max}, {monitor: val_accuracy}]",
         "--model.init_args.learning_rate=1e-3"],
        run=False,
    )
    assert cli.trainer.max_epochs == 1 and cli.trainer.resume_policy == "rescale" and cli.trainer.ledger.strict is False
    assert cli.model.optimizer_spec.describe() == "adam(amsgrad=True)"
    assert cli.model.scheduler_spec.lightning_config["monitor"] == "val_accuracy"
    assert cli.model.learning_rate == 1e-3


def test_yaml_exponent_without_dot_is_a_float_not_a_string(tmp_path):
    # PyYAML reads `3e-3` as the string '3e-3' (YAML 1.1); jsonargparse's loader and the float hint fix it.
    path = quickstart_with(tmp_path, "learning_rate: 3.0e-3", 'learning_rate: 3e-3\n    weight_decay: "1e-2"')
    path.write_text(path.read_text().replace("    weight_decay: 0.01                       # decays weights, not biases or norms\n", ""))
    cli = build_cli(["fit", "--config", str(path)], run=False)
    assert cli.model.learning_rate == pytest.approx(3e-3) and isinstance(cli.model.learning_rate, float)
    assert cli.model.weight_decay == pytest.approx(1e-2)


def test_print_config_round_trips_the_spec_forms(tmp_path, capsys):
    path = quickstart_with(tmp_path, "optimizer: adamw", "optimizer: [adam, {amsgrad: true}]")
    assert run(["fit", "--config", str(path), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["optimizer"] == ["adam", {"amsgrad": True}]
    assert printed["model"]["init_args"]["lr_scheduler"] == ["cosine_schedule_with_warmup", {"num_warmup_steps": 0.1}]
    assert printed["trainer"]["strict_ledger"] is True and printed["trainer"]["strategy"] == "ddp"
    # What --print_config prints is itself a config flashdist accepts.
    again = tmp_path / "printed.yaml"
    again.write_text(yaml.safe_dump(printed))
    assert run(["fit", "--config", str(again), "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == printed


def test_fit_help_lists_flashdist_trainer_args(capsys):
    assert run(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--trainer.strict_ledger" in out and "--trainer.resume_policy" in out and "--config" in out


def test_flashdist_help_lists_commands_and_validate_has_help():
    out = subprocess.run([sys.executable, "-m", "flashdist.cli.main", "--help"], capture_output=True, text=True, cwd=REPO).stdout
    for command in ("fit", "validate", "plan", "launch", "slurm", "bench"):
        assert f"  {command} " in out
    assert run(["validate", "--help"]) == 0


def test_validate_runs_in_one_process(tmp_path, capsys):
    path = quickstart_with(tmp_path, "num_samples: 2048", "num_samples: 64")
    status = run(["validate", "--config", str(path), "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.logger=false",
                  "--trainer.enable_progress_bar=false"])
    assert status == 0
    assert "val_accuracy" in capsys.readouterr().out


def _write_text_files(root):
    rows = [("a wonderful, moving film", "pos"), ("dull and far too long", "neg")] * 6
    (root / "train.csv").write_text("text,label\n" + "".join(f'"{t}",{l}\n' for t, l in rows))
    (root / "val.jsonl").write_text('{"text": "moving", "label": "pos"}\n{"text": "dull", "label": "neg"}\n')
    return {"class_path": "flashdist.data.TextFileDataModule",
            "init_args": {"train_file": str(root / "train.csv"), "val_file": str(root / "val.jsonl"), "max_length": 12, "batch_size": 4}}


def _write_image_folder(root):
    from tests.data.test_image_folder import write_images

    write_images(root / "images", {"cat": 4, "dog": 4})
    return {"class_path": "flashdist.data.ImageFolderDataModule",
            "init_args": {"train_dir": str(root / "images"), "val_fraction": 0.25, "image_size": 8, "batch_size": 2}}


@pytest.mark.parametrize(
    "model, make_data",
    [
        ({"class_path": "flashdist.text.TextClassifier", "init_args": {"num_classes": 2, "backbone": "tiny-bert"}}, _write_text_files),
        ({"class_path": "flashdist.image.ImageClassifier", "init_args": {"num_classes": 2, "backbone": "resnet_tiny"}}, _write_image_folder),
    ],
    ids=["csv+jsonl text", "image folder"],
)
def test_file_datamodules_fit_from_yaml_in_one_process(tmp_path, capsys, model, make_data):
    model["init_args"].update(optimizer="adamw", learning_rate=1e-3, lr_scheduler=["linear_schedule_with_warmup", {"num_warmup_steps": 0.25}])
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 2, "default_root_dir": str(tmp_path / "run"), "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False},
        "model": model,
        "data": make_data(tmp_path),
    }
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run(["fit", "--config", str(path)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 6
    assert "6 taken / 6 planned" in capsys.readouterr().out
