"""A Task logs train_loss only on the steps something reads it, with that step's value (Lightning's on_step meaning)."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import flashdist


class StepLosses(Callback):
    """Every step's loss as the Trainer got it from training_step (the reference)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(tmp_path, steps: int, **trainer_kwargs):
    torch.manual_seed(0)
    x = torch.randn(steps * 4, 3)
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)
    task = flashdist.Task(torch.nn.Linear(3, 1), loss_fn=torch.nn.functional.mse_loss, optimizer="sgd", learning_rate=0.05)
    losses = StepLosses()
    trainer_kwargs.setdefault("callbacks", [])
    trainer_kwargs["callbacks"] = [*trainer_kwargs["callbacks"], losses]
    trainer = flashdist.Trainer(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", enable_model_summary=False,
                                **{"enable_progress_bar": False, "enable_checkpointing": False, **trainer_kwargs})
    trainer.fit(task, data)
    return trainer, losses.losses


def test_loggers_get_each_logged_steps_own_loss_and_callback_metrics_the_last(tmp_path):
    trainer, losses = _fit(tmp_path, 7, logger=CSVLogger(tmp_path), log_every_n_steps=3)
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train_loss")]
    assert [int(row["step"]) for row in rows] == [2, 5]
    assert [float(row["train_loss"]) for row in rows] == pytest.approx([losses[2], losses[5]], rel=1e-6)
    assert float(trainer.callback_metrics["train_loss"]) == pytest.approx(losses[-1], rel=1e-6)


def test_model_checkpoint_monitoring_train_loss_sees_every_step(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="train_loss", mode="max", every_n_train_steps=1, save_top_k=1)
    _, losses = _fit(tmp_path, 5, logger=False, enable_checkpointing=True, callbacks=[checkpoint], log_every_n_steps=50)
    # not a logging step among them: the best (highest) loss is found only if every step's loss reached it
    assert float(checkpoint.best_model_score) == pytest.approx(max(losses), rel=1e-6)
    assert losses.index(max(losses)) + 1 == int(checkpoint.best_model_path.split("step=")[1].split(".")[0])


class CountedMonitor(Callback):
    """A callback whose ``monitor`` counts how often flashdist asks whom it monitors."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def monitor(self) -> str:
        self.reads += 1
        return "val_loss"


def test_whether_a_training_metric_is_monitored_is_decided_once_per_fit_not_every_step(tmp_path):
    counted = CountedMonitor()
    trainer, losses = _fit(tmp_path, 6, logger=False, callbacks=[counted], log_every_n_steps=50)
    assert len(losses) == 6 and counted.reads == 1  # at the fit's start; a per-step scan would read it 6 times
    again = flashdist.Trainer(default_root_dir=tmp_path / "again", max_epochs=1, accelerator="cpu", logger=False, callbacks=[counted],
                              enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    again.fit(trainer.lightning_module, DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8, 1)), batch_size=4))
    assert counted.reads == 2  # a new fit decides again


def test_the_decision_is_the_same_on_a_rank_whose_bar_lightning_disabled(tmp_path):
    # Lightning disables the bar on every rank but 0 (ProgressBar.setup); a metric summed over the ranks
    # when due (CausalLM's train_loss) needs every rank to decide alike, or the sum waits forever.
    from lightning.pytorch.callbacks import TQDMProgressBar

    from flashdist.tasks.log_cadence import step_metrics_due

    def decisions(disabled: bool) -> list[bool]:
        bar = TQDMProgressBar(refresh_rate=3)
        trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, callbacks=[bar], enable_checkpointing=False)
        if disabled:
            bar.disable()
        return [step_metrics_due(trainer, batch_idx, training_metric_monitored=False) for batch_idx in range(7)]

    assert decisions(disabled=True) == decisions(disabled=False) == [False, False, True, False, False, True, False]
