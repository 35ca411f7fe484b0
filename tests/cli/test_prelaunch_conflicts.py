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


_ZERO2 = {"zero_optimization": {"stage": 2}}
_DS_SCHEDULE = {"optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
                "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 5, "warmup_num_steps": "auto"}}}
# 8 samples, batch 2, 2 ranks: 2 micro-batches per rank per epoch; accumulation 3 closes one
# window per epoch (at its end), so 2 epochs plan 2 steps; the global batch is 2 × 3 × 2 = 12.
PLAN_CONTRADICTIONS = {
    "micro batch": ({**_ZERO2, "train_micro_batch_size_per_gpu": 4},
                    "train_micro_batch_size_per_gpu=4 contradicts the training DataLoader's batch_size = 2"),
    "global batch": ({**_ZERO2, "train_batch_size": 8},
                     "train_batch_size=8 contradicts batch_size × accumulate_grad_batches × data-parallel size = 12"),
    "total steps": ({**_ZERO2, **_DS_SCHEDULE},
                    "scheduler.params.total_num_steps=5 contradicts the step plan's total optimizer steps = 2"),
}


@pytest.mark.parametrize("config, fragment", list(PLAN_CONTRADICTIONS.values()), ids=list(PLAN_CONTRADICTIONS))
def test_a_batch_or_step_count_that_contradicts_the_plan_is_refused_before_the_other_rank_starts(tmp_path, monkeypatch, config, fragment):
    def refuse(*args, **kwargs):
        raise AssertionError("a second rank was launched")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    given = json.loads(json.dumps(config))
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, lr_scheduler=None)  # no optimizer=: the config's may be used
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy=config, accumulate_grad_batches=3,
                                max_epochs=2, logger=False, enable_progress_bar=False)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), batch_size=2, shuffle=True)
    with pytest.raises(ConfigError, match="HINT") as raised:
        trainer.fit(task, loader)
    assert fragment in str(raised.value)
    assert config == given  # the user's dict is not filled in place


def test_the_plan_before_launch_is_the_plan_each_rank_computes(tmp_path):
    from flashdist.runtime.planning import plan_before_launch

    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp", accumulate_grad_batches=3,
                                max_epochs=3, logger=False, enable_progress_bar=False)
    # The measured awkward sizes (DESIGN.md): 1000 samples, batch 9, accumulation 3, 3 epochs, 2 ranks → 57 steps.
    loader = DataLoader(TensorDataset(torch.randn(1000, 4)), batch_size=9, shuffle=True)
    plan, batch_size = plan_before_launch(trainer, loader)
    assert (plan.planned_total_steps, plan.micro_batches_per_epoch_per_rank, batch_size) == (57, 56, 9)
    custom = DataLoader(TensorDataset(torch.randn(1000, 4)), batch_size=9, sampler=list(range(1000)))
    assert plan_before_launch(trainer, custom) == (None, 9)  # a custom sampler: only the ranks know its sharding
