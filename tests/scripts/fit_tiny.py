"""A small real fit, run as its own process so Lightning can launch its ranks.

Used by the multi-process tests: ``python tests/scripts/fit_tiny.py '<json config>'``.
Config keys (all optional): root, dataset_size, batch_size, drop_last, devices, num_nodes,
strategy, accumulate_grad_batches, max_epochs, max_steps, limit_train_batches, optimizer,
lr_scheduler, learning_rate, weight_decay, hidden, seed, ckpt_path, checkpoint_every_n_steps,
extra_trainer (dict). Writes summary.json / lr.csv into `root`.
"""

from __future__ import annotations

import json
import sys

import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist.core.classification import ClassificationTask


def as_spec(value):
    return tuple(value) if isinstance(value, list) else value


def main(config: dict) -> None:
    seed_everything(config.get("seed", 0), workers=True)
    n = config.get("dataset_size", 200)
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 16, generator=generator)
    y = (x[:, :4].sum(dim=1) > 0).long()
    hidden = config.get("hidden", 32)
    model = nn.Sequential(nn.Linear(16, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 2))
    task = ClassificationTask(
        model,
        num_classes=2,
        optimizer=as_spec(config.get("optimizer", "adamw")),
        lr_scheduler=as_spec(config.get("lr_scheduler", ["linear_schedule_with_warmup", {"num_warmup_steps": 0.1}])),
        learning_rate=config.get("learning_rate", 0.01),
        weight_decay=config.get("weight_decay"),
    )
    callbacks = []
    if config.get("checkpoint_every_n_steps"):
        callbacks.append(ModelCheckpoint(dirpath=f"{config['root']}/checkpoints", every_n_train_steps=config["checkpoint_every_n_steps"], save_top_k=-1))
    trainer = flashdist.Trainer(
        default_root_dir=config["root"],
        accelerator="cpu",
        devices=config.get("devices", 2),
        num_nodes=config.get("num_nodes", 1),
        strategy=config.get("strategy", "ddp"),
        accumulate_grad_batches=config.get("accumulate_grad_batches", 1),
        max_epochs=config.get("max_epochs", 2),
        max_steps=config.get("max_steps", -1),
        limit_train_batches=config.get("limit_train_batches", 1.0),
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **config.get("extra_trainer", {}),
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=config.get("batch_size", 8), drop_last=config.get("drop_last", False))
    trainer.fit(task, loader, ckpt_path=config.get("ckpt_path"))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
