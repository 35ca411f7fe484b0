"""grad_norm reaches the loggers at Lightning's logging steps, with the value lr.csv has for that update."""

from __future__ import annotations

import csv

import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import flashdist


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_grad_norm_is_logged_at_each_logging_step_with_that_updates_norm(tmp_path):
    torch.manual_seed(0)
    inputs = torch.randn(40, 2)
    task = flashdist.Task(torch.nn.Linear(2, 1), loss_fn=torch.nn.functional.mse_loss, optimizer="sgd", learning_rate=0.1)
    trainer = flashdist.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, log_every_n_steps=4,
                                logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
    trainer.fit(task, DataLoader(TensorDataset(inputs, inputs[:, :1]), batch_size=4))  # 10 updates
    every_update = {int(row["step"]): float(row["grad_norm"]) for row in _rows(tmp_path / "lr.csv")}
    logged = {int(row["step"]): float(row["grad_norm"]) for row in _rows(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
              if row.get("grad_norm")}
    assert len(every_update) == 10 and len(set(every_update.values())) == 10
    # lr.csv numbers an update from 1, CSVLogger from 0; Lightning writes after every 4th update
    assert logged == {step - 1: norm for step, norm in every_update.items() if step % 4 == 0}
