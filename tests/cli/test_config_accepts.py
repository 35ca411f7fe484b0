"""Configs LightningCLI (jsonargparse) accepts are not refused by flashdist's own checks, and what it refuses stays refused.

From the user's side, in-process: the ``flashdist fit`` command a LightningCLI user types, with
``Trainer.fit`` replaced by a recorder (nothing trains), or with ``--print_config`` (jsonargparse
prints the config it merged, so the test reads what jsonargparse made of the layers); and the
pre-launch check ``flashdist launch`` runs. Then the signature reading on small classes made here.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

import flashdist.runtime.trainer
from flashdist.cli.fit import check, run

# A run small enough to build in a moment: one CPU device, no logger, a tiny ResNet.
BASE = """\
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 1
  logger: false
  enable_checkpointing: false
  enable_model_summary: false
model:
  class_path: flashdist.image.ImageClassifier
  init_args: {num_classes: 4, backbone: resnet_tiny, learning_rate: 0.003}
data:
  class_path: flashdist.data.SyntheticImageDataModule
  init_args: {num_classes: 4, num_samples: 64, image_size: 16, batch_size: 8}
"""


@pytest.fixture
def fit_calls(monkeypatch, tmp_path):
    """``flashdist fit`` runs in ``tmp_path`` and records what ``Trainer.fit`` was called with instead of training."""
    calls: list[dict[str, Any]] = []
    trainer = flashdist.runtime.trainer.Trainer

    @functools.wraps(trainer.fit)  # the CLI reads fit's signature (ckpt_path) through it
    def recorded_fit(self, *args, **kwargs):
        calls.append({"trainer": self, **kwargs})

    monkeypatch.setattr(trainer, "fit", recorded_fit)
    monkeypatch.chdir(tmp_path)
    return calls


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fit(capsys, *args: str) -> tuple[int, str, str]:
    status = run(["fit", *args])
    out, err = capsys.readouterr()
    return status, out, err


# ---- 13: the pre-launch check reads the fit subcommand's own arguments -----------------------
def test_the_prelaunch_check_takes_ckpt_path_auto_as_fit_does(tmp_path, fit_calls, capsys):
    config = write(tmp_path, "run.yaml", BASE)
    # `flashdist launch ... flashdist fit --config run.yaml --ckpt_path=auto`: the README's resume command
    assert check(["fit", "--config", str(config), "--ckpt_path=auto"]) == 0, capsys.readouterr().err
    resume = write(tmp_path, "resume.yaml", BASE + "ckpt_path: auto\n")
    assert check(["fit", "--config", str(resume)]) == 0, capsys.readouterr().err
    assert fit_calls == []  # a check, not a fit
    assert check(["fit", "--config", str(config), "--ckpt_pth=auto"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'ckpt_pth' on the command line" in err and "did you mean 'ckpt_path'" in err, err


def test_fit_hands_ckpt_path_to_trainer_fit(tmp_path, fit_calls, capsys):
    status, _, err = fit(capsys, "--config", str(write(tmp_path, "run.yaml", BASE)), "--ckpt_path=auto")
    assert status == 0, err
    assert [call["ckpt_path"] for call in fit_calls] == ["auto"]
