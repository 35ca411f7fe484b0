"""The example configs' logs follow ``--trainer.default_root_dir``: their loggers give no
``save_dir``, and flashdist fills it with the run's root (flashdist/cli/lightning_cli.py)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from flashdist.cli import plan
from flashdist.cli.fit import run
from tests.cli.cli_runs import CONFIGS

ONE_PROCESS_SHORT = ["--trainer.devices=1", "--trainer.strategy=auto", "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
                     "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--data.init_args.num_samples=128"]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_no_example_config_hard_codes_a_log_folder(name):
    trainer = yaml.safe_load((CONFIGS / name).read_text())["trainer"]
    loggers = trainer.get("logger") or []
    assert loggers, f"{name} has no logger"
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        assert "save_dir" not in (logger.get("init_args") or {}), f"{name}: {logger}"


def test_quickstart_logs_land_under_the_given_default_root_dir_and_plan_and_fit_print_the_same_labels(tmp_path, monkeypatch, capsys):
    shutil.copy(CONFIGS / "quickstart.yaml", tmp_path / "quickstart.yaml")
    monkeypatch.chdir(tmp_path)  # the user's folder: relative paths resolve here
    assert run(["fit", "--config", "quickstart.yaml", "--trainer.default_root_dir=runs/x", *ONE_PROCESS_SHORT]) == 0
    run_dir = tmp_path / "runs" / "x"
    assert (run_dir / "summary.json").is_file()
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert any((run_dir / "csv").rglob("metrics.csv"))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["x"]  # nothing under runs/quickstart
    fit_out = capsys.readouterr().out
    # `flashdist plan` on the same config names each fact as the fit's plan table does.
    assert plan.run(["--config", "quickstart.yaml", "--devices", "1", "--dataset-size", "128"]) == 0
    plan_labels = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()]
    assert "micro-batches / epoch / rank" in plan_labels and "global batch size" in plan_labels
    missing = [label for label in plan_labels if label not in fit_out]
    assert missing == [], f"plan labels not in the fit's printout: {missing}\n{fit_out}"
