"""One process of ``flashdist bench fit``: runs every variant's fits, interleaved, and times each step.

Run by :mod:`flashdist.bench.fit` as ``python -m flashdist.bench.fit_worker <config.json>``
(one process) or under ``torchrun`` (several; every rank runs the same sequence of fits, as
each fit's collectives require, and rank 0 writes the timings).

A variant is ``<harness>:<scheduler>``: harness ``flashdist`` (``flashdist.Trainer`` + ``Task``)
or ``lightning`` (a plain ``lightning.Trainer`` + a LightningModule written the way a user
would: same model, same AdamW, same training_step and logging), scheduler ``none``, ``hf``
(transformers' ``get_linear_schedule_with_warmup``, a LambdaLR) or ``fast`` (flashdist's
closed-form ``linear_schedule_with_warmup``). Both harnesses build the schedule with the
same warmup (10% of the steps, rounded up) and total.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, seed_everything
from lightning.pytorch import Trainer as LightningTrainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HARNESSES = ("lightning", "flashdist")
SCHEDULES = ("none", "hf", "fast")
VARIANTS = tuple(f"{h}:{s}" for h in HARNESSES for s in SCHEDULES)
FEATURES = 16
LEARNING_RATE = 0.01
WARMUP_FRACTION = 0.1


class StepTimer(Callback):
    """A timestamp at the end of every training batch; differences are whole loop iterations."""

    def __init__(self) -> None:
        self.stamps_ns: list[int] = []
        self.cpu_stamps_ns: list[int] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.stamps_ns.append(time.perf_counter_ns())
        # CPU time of the whole process (gloo's threads included): what the step costs, even
        # when other jobs on the machine stretch the wall-clock time.
        self.cpu_stamps_ns.append(time.process_time_ns())


class PlainModule(LightningModule):
    """The plain-Lightning twin of ``flashdist.Task`` for this model: what a user would write."""

    def __init__(self, model: nn.Module, schedule: str, total_steps: int):
        super().__init__()
        self.model = model
        self.schedule = schedule
        self.total_steps = total_steps

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self(inputs), targets)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=LEARNING_RATE)
        if self.schedule == "none":
            return optimizer
        warmup_steps = math.ceil(WARMUP_FRACTION * self.total_steps)
        if self.schedule == "hf":
            from transformers import get_linear_schedule_with_warmup
        else:
            from flashdist.optim.fast import linear_schedule_with_warmup as get_linear_schedule_with_warmup
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def make_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 2))


def make_module(variant: str, hidden: int, total_steps: int) -> LightningModule:
    harness, schedule = variant.split(":")
    model = make_model(hidden)
    if harness == "lightning":
        return PlainModule(model, schedule, total_steps)
    from flashdist import Task

    name = ("hf:" if schedule == "hf" else "") + "linear_schedule_with_warmup"
    spec = None if schedule == "none" else (name, {"num_warmup_steps": WARMUP_FRACTION})
    return Task(model, loss_fn=nn.functional.cross_entropy, optimizer="adamw", learning_rate=LEARNING_RATE, lr_scheduler=spec)


def make_trainer(variant: str, config: dict[str, Any], root: str, timer: StepTimer) -> LightningTrainer:
    harness = variant.split(":")[0]
    kwargs = dict(
        default_root_dir=root,
        accelerator="cpu",
        devices=config["devices"],
        strategy=config["strategy"],
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    if harness == "flashdist":
        import flashdist

        return flashdist.Trainer(**kwargs)
    from flashdist.strategies.names import resolve_strategy

    # Lightning refuses DeepSpeed/FSDP on CPU; there the plain fit gets flashdist's CPU strategy object.
    strategy = config["strategy"]
    if strategy not in ("auto", "ddp", "ddp_spawn", "single_device"):
        kwargs["strategy"] = resolve_strategy(strategy, "cpu")
    return LightningTrainer(**kwargs)


def one_fit(variant: str, config: dict[str, Any], loader: DataLoader, total_steps: int) -> dict[str, Any]:
    seed_everything(config["seed"], workers=True, verbose=False)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="flashdist-bench-") as root:
        started = time.perf_counter()
        trainer = make_trainer(variant, config, root, timer)
        module = make_module(variant, config["hidden"], total_steps)
        trainer.fit(module, loader)
        wall_s = time.perf_counter() - started
    warmup = config["warmup_steps"]
    wall_us, cpu_us = _intervals_us(timer.stamps_ns[warmup:]), _intervals_us(timer.cpu_stamps_ns[warmup:])
    return {
        "variant": variant,
        "steps_taken": len(timer.stamps_ns),
        "timed_intervals": len(wall_us),
        "median_us": _median(wall_us),
        "mean_us": sum(wall_us) / len(wall_us),
        "cpu_median_us": _median(cpu_us),
        "cpu_mean_us": sum(cpu_us) / len(cpu_us),
        "fit_wall_s": wall_s,
    }


def _intervals_us(stamps_ns: list[int]) -> list[float]:
    return [(b - a) / 1e3 for a, b in zip(stamps_ns, stamps_ns[1:])]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def round_order(variants: list[str], rng: random.Random) -> list[str]:
    """The schedules in a shuffled order; per schedule, its harnesses back to back, shuffled.

    Adjacent fits share the machine's state (load, clocks, caches) best, so each flashdist fit
    runs right before or after the plain-Lightning fit it is compared with.

    Example:
        >>> round_order(["lightning:none", "flashdist:none", "lightning:hf", "flashdist:hf"], random.Random(0))
        ['lightning:none', 'flashdist:none', 'flashdist:hf', 'lightning:hf']
    """
    by_schedule: dict[str, list[str]] = {}
    for variant in variants:
        by_schedule.setdefault(variant.split(":")[1], []).append(variant)
    schedules = list(by_schedule)
    rng.shuffle(schedules)
    order: list[str] = []
    for schedule in schedules:
        pair = list(by_schedule[schedule])
        rng.shuffle(pair)
        order += pair
    return order


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    torch.set_num_threads(config.get("torch_threads", 1))
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):  # per-fit banners would flood the log
        logging.getLogger(name).setLevel(logging.ERROR)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    total_steps = config["warmup_steps"] + config["steps"] + 1
    generator = torch.Generator().manual_seed(1234)
    samples = total_steps * config["batch_size"] * world
    x = torch.randn(samples, FEATURES, generator=generator)
    y = (x[:, :4].sum(dim=1) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=config["batch_size"], shuffle=False)
    variants = config["variants"]
    fits: list[dict[str, Any]] = []
    order_rng = random.Random(config["seed"])  # same seed on every rank: the same order everywhere
    for round_index in range(-config["warmup_rounds"], config["repeats"]):
        for variant in round_order(variants, order_rng):
            record = one_fit(variant, config, loader, total_steps)
            if round_index >= 0:
                fits.append({**record, "round": round_index})
        if rank == 0:
            done = f"round {round_index + 1}/{config['repeats']}"
            print(f"[bench fit] devices={config['devices']} {done} done", file=sys.stderr, flush=True)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps({"fits": fits, "world_size": world}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
