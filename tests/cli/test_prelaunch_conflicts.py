"""A scheduler both in a DeepSpeed JSON and on the Task: refused once, before any rank starts."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.tasks.classification import ClassificationTask
from tests.cli.test_fit_errors import edit, no_launch, refused  # noqa: F401  (no_launch: a fixture)

DS_WITH_SCHEDULER = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
                     "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}}


def test_flashdist_fit_refuses_the_doubled_scheduler_before_launch(tmp_path, capsys, no_launch):
    ds_json = tmp_path / "ds.json"
    ds_json.write_text(json.dumps(DS_WITH_SCHEDULER))
    err = refused(tmp_path, capsys, edit("strategy: ddp", f"strategy: {ds_json}"))
    assert "a scheduler is given both in the DeepSpeed config ('WarmupLR') and on the Task" in err
    assert err.count("a scheduler is given both") == 1 and "[rank" not in err


def test_trainer_fit_refuses_it_before_launching_the_other_rank(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a second rank was launched")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy=dict(DS_WITH_SCHEDULER),
                                max_epochs=1, logger=False, enable_progress_bar=False)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), batch_size=2)
    with pytest.raises(ConfigError, match=r"scheduler is given both in the DeepSpeed config \('WarmupLR'\) and on the Task.*HINT: keep one"):
        trainer.fit(task, loader)
