"""The Trainer settings a Lightning user tries first, each in a real fit with an exact ledger.

Sizes: 40 samples, batch 4 → 10 batches per epoch, 2 epochs, a linear warmup (10 %) to zero.
"""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist.tasks.classification import ClassificationTask


class CountBatches(Callback):
    def __init__(self):
        self.train_batches = 0
        self.val_batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_batches += 1

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val_batches += 1


def _loader() -> DataLoader:
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)


# (Trainer kwargs, optimizer steps = train batches, validation batches), each derived by hand.
HABITS = [
    # one batch of training and one of validation, one epoch, whatever max_epochs says
    pytest.param(dict(fast_dev_run=True), 1, 1, id="fast_dev_run=True"),
    # three batches of each
    pytest.param(dict(fast_dev_run=3), 3, 3, id="fast_dev_run=3"),
    # the int 1: one batch per epoch, 2 epochs; validation on all 10 batches per epoch
    pytest.param(dict(limit_train_batches=1), 2, 20, id="limit_train_batches=1"),
    # the float 1.0: every batch
    pytest.param(dict(limit_train_batches=1.0), 20, 20, id="limit_train_batches=1.0"),
    # no validation at all
    pytest.param(dict(limit_val_batches=0), 20, 0, id="limit_val_batches=0"),
]


@pytest.mark.parametrize(("settings", "steps", "val_batches"), HABITS)
def test_lightning_debug_settings_train_with_an_exact_ledger(tmp_path, settings, steps, val_batches):
    counter = CountBatches()
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="sgd", learning_rate=0.1,
                              lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    trainer = flashdist.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[counter], **settings,
    )
    trainer.fit(task, _loader(), _loader())

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["completed"] is True
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == steps
    assert counter.train_batches == steps and counter.val_batches == val_batches
    assert len((tmp_path / "lr.csv").read_text().splitlines()) == 1 + steps


def test_fast_dev_run_cuts_a_warmup_longer_than_its_one_step_with_a_warning(tmp_path):
    # A config written for the real run (500 warmup steps) under a smoke run of 1 step: refused
    # in a real run that short; here cut to the run with a warning, so fast_dev_run works on any config.
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="sgd", learning_rate=0.1,
                              lr_scheduler=("cosine_schedule_with_warmup", {"num_warmup_steps": 500}))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, fast_dev_run=True, logger=False,
                                enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning, match=r"num_warmup_steps=500 is not less than the 1 training steps.*fast_dev_run=1: using num_warmup_steps=1"):
        trainer.fit(task, _loader())
    assert trainer.ledger.optimizer_steps == 1
