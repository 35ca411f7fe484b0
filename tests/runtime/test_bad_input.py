"""Bad input is a ConfigError before any optimizer step, naming the value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.tasks.classification import ClassificationTask
from tests.runtime import harness


def _data(n: int = 32) -> TensorDataset:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, (x[:, 0] > 0).long())


class _Stream(IterableDataset):
    def __iter__(self):
        return iter(_data())


def _task(**kwargs) -> ClassificationTask:
    kwargs.setdefault("lr_scheduler", ("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    return ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01, **kwargs)


def _trainer(root: Path, **kwargs) -> flashdist.Trainer:
    kwargs.setdefault("max_epochs", 2)
    return flashdist.Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=bool(kwargs.get("callbacks")), **kwargs,
    )


def _assert_never_trained(trainer: flashdist.Trainer, root: Path) -> None:
    assert trainer.ledger.optimizer_steps == 0
    assert not (root / "lr.csv").exists() or (root / "lr.csv").read_text().count("\n") <= 1


def test_iterable_dataset_without_max_steps(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(ConfigError, match=r"no length.*HINT: set Trainer\(max_steps=N\)"):
        trainer.fit(_task(), DataLoader(_Stream(), batch_size=4))
    _assert_never_trained(trainer, tmp_path)


def test_warmup_not_shorter_than_training(tmp_path):
    trainer = _trainer(tmp_path)
    task = _task(lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 16}))
    with pytest.raises(ConfigError, match=r"num_warmup_steps=16 is not less than the 16 training steps.*HINT"):
        trainer.fit(task, DataLoader(_data(), batch_size=4))
    _assert_never_trained(trainer, tmp_path)


@pytest.mark.parametrize("callback", [ModelCheckpoint(monitor="val_accuracy"), EarlyStopping(monitor="val_los")])
def test_monitor_metric_that_is_never_logged(tmp_path, callback):
    trainer = _trainer(tmp_path, callbacks=[callback])
    with pytest.raises(ConfigError, match=rf"monitor='{callback.monitor}'\): this fit never logs.*Accepted: 'epoch', 'step', 'train_loss'.*HINT"):
        trainer.fit(_task(), DataLoader(_data(), batch_size=4))  # no validation loader: no val_* metric
    _assert_never_trained(trainer, tmp_path)


def test_monitor_of_a_logged_validation_metric_is_accepted(tmp_path):
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_accuracy", mode="max")])
    trainer.fit(_task(), DataLoader(_data(), batch_size=4), DataLoader(_data(), batch_size=4))
    assert trainer.ledger.optimizer_steps == 8


def test_launcher_and_trainer_topology_disagree(tmp_path, monkeypatch):
    for name, value in {"TORCHELASTIC_RUN_ID": "t", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "GROUP_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"devices=4.*HINT"):
        flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=4, logger=False)


def test_deepspeed_config_that_is_not_json(tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{"zero_optimization": {"stage": 2,},}')
    with pytest.raises(ConfigError, match=r"is not valid JSON.*line 1.*HINT: check for trailing commas"):
        flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, strategy=str(config), logger=False)


@pytest.mark.multiprocess
def test_drop_last_leaves_each_of_two_ranks_without_a_batch(tmp_path):
    # 12 samples, 2 ranks, batch 8, drop_last: 6 per rank, 0 batches. Lightning prints
    # "No training batches" and exits 0; flashdist refuses before any step.
    proc = harness.fit(tmp_path, dataset_size=12, batch_size=8, drop_last=True)
    assert proc.returncode != 0
    assert "ConfigError: each rank would get 0 training batches (12 samples over 2 data-parallel rank(s) with batch_size=8, drop_last=True)" in proc.stderr
    assert "HINT: use more data, a smaller batch size, fewer ranks, drop_last=False" in proc.stderr
    assert not (tmp_path / "lr.csv").exists()
