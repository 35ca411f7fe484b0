"""A small real fit, run as its own process so Lightning can launch its ranks.

Used by the multi-process tests: ``python tests/scripts/fit_tiny.py '<json config>'``.
Config keys (all optional): root, dataset_size, batch_size, drop_last, devices, num_nodes,
strategy, accumulate_grad_batches, max_epochs, max_steps, limit_train_batches, optimizer,
lr_scheduler, learning_rate, weight_decay, hidden, seed, ckpt_path, checkpoint_every_n_steps,
extra_trainer (dict), checkpoint_every_n_epochs, stop_after_epochs, shard_module_classes (fsdp
block class names), accelerator, lightning_fsdp1 (Lightning's FSDPStrategy object), model ("blocks": BlockNet), param_groups,
layer_decay, dump_params_after_step (k: the full parameters after update k, params_step{k}.pt), list_sampler (the
loader's sampler a plain list of indices: a custom sampler, whose sharding only the ranks know),
val_dataset_size (a validation loader of that size; limit_val_batches then applies, default 1.0;
without it no validation runs), validate_after_fit (then ``trainer.validate`` with the same Trainer and
model; its metrics and batches in fit_extra.json), logger and enable_checkpointing (Lightning's defaults: a
TensorBoard logger, a ModelCheckpoint). `strategy` may also be a DeepSpeed config dict or a JSON path.
Writes summary.json / lr.csv into `root`, and fit_extra.json (rank 0: the innermost
optimizer, its param groups, per-batch losses, validation batches, a schedule-free optimizer's
train_mode at each train / validation batch, the DeepSpeed engine's own step count, the
FSDP-sharded modules, how many of the optimizer's parameters are DTensors).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist.tasks.classification import ClassificationTask


def as_spec(value):
    return tuple(value) if isinstance(value, list) else value


class BlockNet(nn.Module):
    """Embedding, two blocks in an nn.ModuleList (what layer_decay and FSDP's default sharding find), norm, head."""

    def __init__(self, hidden: int):
        super().__init__()
        self.embed = nn.Linear(16, hidden)
        self.blocks = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(2)])
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.head(self.norm(x))


class DumpParams(Callback):
    """After optimizer step k, every full parameter (gathered from ZeRO-3 / FSDP shards) to params_step{k}.pt on rank 0."""

    def __init__(self, root: str, step: int):
        self.root, self.step = root, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step or getattr(self, "done", False):
            return
        self.done = True
        named = list(pl_module.named_parameters())
        gather = contextlib.nullcontext()
        if getattr(trainer.strategy, "zero_stage_3", False):
            import deepspeed

            gather = deepspeed.zero.GatheredParameters([p for _, p in named])
        with gather:
            full = {name: (p.full_tensor() if hasattr(p, "full_tensor") else p.data).detach().float().clone() for name, p in named}
        if trainer.is_global_zero:
            torch.save(full, Path(self.root, f"params_step{self.step}.pt"))


def _train_mode(trainer) -> bool | None:
    """A schedule-free optimizer's mode (its param groups' ``train_mode``); None for other optimizers."""
    from flashdist.strategies.base import unwrap_optimizer

    groups = unwrap_optimizer(trainer.optimizers[0]).param_groups if trainer.optimizers else []
    return groups[0].get("train_mode") if groups else None


class RecordLosses(Callback):
    """Per-batch training loss (this rank's), validation batches, and an optional stop after N epochs."""

    def __init__(self, stop_after_epochs: int | None = None):
        self.losses: list[list[float]] = []
        self.val_batches = 0
        self.train_modes: list[bool | None] = []
        self.val_modes: list[bool | None] = []
        self.stop_after_epochs = stop_after_epochs

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train_modes.append(_train_mode(trainer))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_modes.append(_train_mode(trainer))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val_batches += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append([trainer.current_epoch, batch_idx, float(outputs["loss"])])

    def on_train_epoch_end(self, trainer, pl_module):
        if self.stop_after_epochs is not None and trainer.current_epoch + 1 >= self.stop_after_epochs:
            trainer.should_stop = True


def write_extra(trainer, recorder: RecordLosses, root: str) -> None:
    from flashdist.strategies.base import unwrap_optimizer

    optimizer = unwrap_optimizer(trainer.optimizers[0]) if trainer.optimizers else None
    engine = getattr(trainer.strategy, "deepspeed_engine", None) if hasattr(trainer.strategy, "zero_stage_3") else None
    try:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        FSDPModule = DTensor = ()
    module = trainer.lightning_module
    extra = {
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "optimizer_defaults": {k: v for k, v in (optimizer.defaults if optimizer is not None else {}).items() if isinstance(v, (bool, int, float, str, type(None), tuple, list))},
        "param_groups": [
            {"lr": g["lr"], "weight_decay": g.get("weight_decay"), "num_params": len(g["params"])} for g in (optimizer.param_groups if optimizer else [])
        ],
        "losses": recorder.losses,
        "val_batches": recorder.val_batches,
        "train_modes": recorder.train_modes,
        "val_modes": recorder.val_modes,
        "optimizer_dtensor_params": sum(
            1 for g in (optimizer.param_groups if optimizer else []) for p in g["params"] if DTensor and isinstance(p, DTensor)
        ),
        "optimizer_params": sum(len(g["params"]) for g in (optimizer.param_groups if optimizer else [])),
        "global_step": trainer.global_step,
        "engine_global_steps": getattr(engine, "global_steps", None),
        "engine_micro_steps": getattr(engine, "micro_steps", None),
        "engine_optimizer_class": type(engine.optimizer).__name__ if engine is not None else None,  # ZeRO's wrapper
        "sharded_modules": [name for name, m in module.named_modules() if FSDPModule and isinstance(m, FSDPModule)],
        "dtensor_params": sum(1 for p in module.parameters() if DTensor and isinstance(p, DTensor)),
        "strategy_class": type(trainer.strategy).__name__,
        "deepspeed_config": getattr(trainer.strategy, "config", None) if engine is not None else None,
        "param_dtype": str(next(module.parameters()).dtype),
        "precision": str(trainer.precision),
    }
    if trainer.is_global_zero:
        Path(root, "fit_extra.json").write_text(json.dumps(extra, indent=1, default=str))


def main(config: dict) -> None:
    seed_everything(config.get("seed", 0), workers=True)
    n = config.get("dataset_size", 200)
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 16, generator=generator)
    y = (x[:, :4].sum(dim=1) > 0).long()
    hidden = config.get("hidden", 32)
    if config.get("model") == "blocks":
        model = BlockNet(hidden)
    else:
        model = nn.Sequential(nn.Linear(16, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 2))
    task = ClassificationTask(
        model,
        num_classes=2,
        optimizer=as_spec(config.get("optimizer", "adamw")),
        lr_scheduler=as_spec(config.get("lr_scheduler", ["linear_schedule_with_warmup", {"num_warmup_steps": 0.1}])),
        learning_rate=config.get("learning_rate", 0.01),
        weight_decay=config.get("weight_decay"),
        param_groups=config.get("param_groups"),
        layer_decay=config.get("layer_decay"),
    )
    recorder = RecordLosses(config.get("stop_after_epochs"))
    callbacks = [recorder]
    if config.get("dump_params_after_step"):
        callbacks.append(DumpParams(config["root"], config["dump_params_after_step"]))
    if config.get("checkpoint_every_n_epochs"):
        callbacks.append(ModelCheckpoint(dirpath=f"{config['root']}/checkpoints", every_n_epochs=config["checkpoint_every_n_epochs"], save_top_k=-1, save_on_train_epoch_end=True))
    if config.get("checkpoint_every_n_steps"):
        callbacks.append(ModelCheckpoint(dirpath=f"{config['root']}/checkpoints", every_n_train_steps=config["checkpoint_every_n_steps"], save_top_k=-1))
    strategy = config.get("strategy", "ddp")
    if config.get("shard_module_classes") is not None:
        from flashdist.strategies.fsdp import FSDP2Strategy

        strategy = FSDP2Strategy(shard_module_classes=config["shard_module_classes"])
    if config.get("lightning_fsdp1"):
        from lightning.pytorch.strategies import FSDPStrategy

        strategy = FSDPStrategy()
    trainer = flashdist.Trainer(
        default_root_dir=config["root"],
        accelerator=config.get("accelerator", "cpu"),
        devices=config.get("devices", 2),
        num_nodes=config.get("num_nodes", 1),
        strategy=strategy,
        accumulate_grad_batches=config.get("accumulate_grad_batches", 1),
        max_epochs=config.get("max_epochs", 2),
        max_steps=config.get("max_steps", -1),
        limit_train_batches=config.get("limit_train_batches", 1.0),
        limit_val_batches=config.get("limit_val_batches", 1.0) if config.get("val_dataset_size") else 0,
        logger=config.get("logger", False),
        enable_checkpointing=config.get("enable_checkpointing", len(callbacks) > 1),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **config.get("extra_trainer", {}),
    )
    sampler = list(range(n)) if config.get("list_sampler") else None
    loader = DataLoader(TensorDataset(x, y), batch_size=config.get("batch_size", 8), drop_last=config.get("drop_last", False), sampler=sampler)
    val_loader = None
    if config.get("val_dataset_size"):
        x_val = torch.randn(config["val_dataset_size"], 16, generator=generator)
        val_loader = DataLoader(TensorDataset(x_val, (x_val[:, :4].sum(dim=1) > 0).long()), batch_size=config.get("batch_size", 8))
    trainer.fit(task, loader, val_loader, ckpt_path=config.get("ckpt_path"))
    write_extra(trainer, recorder, config["root"])
    if config.get("validate_after_fit"):
        # A Lightning habit: the same Trainer and model validated after the fit (a new stage of the strategy).
        before = recorder.val_batches
        metrics = trainer.validate(task, val_loader, verbose=False)[0]
        if trainer.is_global_zero:
            extra_path = Path(config["root"], "fit_extra.json")
            extra = json.loads(extra_path.read_text())
            extra["validate_after_fit"] = {"metrics": metrics, "batches": recorder.val_batches - before}
            extra_path.write_text(json.dumps(extra, indent=1, default=str))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
