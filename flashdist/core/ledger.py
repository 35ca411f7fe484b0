"""The step ledger: counts real optimizer updates and scheduler steps, proves plan == executed.

Optimizer updates are counted where they happen: a step pre-hook on the innermost torch
optimizer (under DeepSpeed, the optimizer inside the engine's ZeRO wrapper, so an update the
engine skips is not counted). Each fit writes ``summary.json`` and ``lr.csv`` into
``default_root_dir`` (rank 0) and, when the fit ran to its end, fails loudly if the planned
total differs from the updates taken.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from flashdist.core.planning import data_parallel_size, resolved_schedule, training_plan
from flashdist.strategies import route_for

SUMMARY_FILE = "summary.json"
LR_FILE = "lr.csv"


class LedgerMismatchError(RuntimeError):
    """The fit took a different number of optimizer steps than it planned."""


def innermost_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """Unwrap LightningOptimizer / DeepSpeed's ZeRO wrappers down to the torch optimizer that updates."""
    seen = 0
    while seen < 8:
        inner = getattr(optimizer, "_optimizer", None) or getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer or not hasattr(inner, "param_groups"):
            break
        optimizer, seen = inner, seen + 1
    return optimizer


class StepLedger(Callback):
    """Counts and checks; added to every ``flashdist.Trainer``."""

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.optimizer_steps = 0
        self.lr_rows: list[list[float]] = []
        self.resumed_from: str | None = None
        self._scheduler_start = 0
        self._scheduler_steps_before = 0
        self._hook: Any = None
        self._started_at = 0.0

    # ---- counting ----------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        training_plan(trainer)  # fails here, before any step, if the plan is invalid
        self.resumed_from = trainer.ckpt_path
        if trainer.optimizers:
            self._hook = innermost_optimizer(trainer.optimizers[0]).register_step_pre_hook(self._count)
        scheduler = _scheduler(trainer)
        self._scheduler_start = getattr(scheduler, "last_epoch", 0) if scheduler is not None else 0
        self._started_at = time.perf_counter()

    def _count(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.optimizer_steps += 1
        self.lr_rows.append([float(group["lr"]) for group in optimizer.param_groups])

    def scheduler_steps(self, trainer: Any) -> int:
        scheduler = _scheduler(trainer)
        if scheduler is None or not hasattr(scheduler, "last_epoch"):
            return 0
        return self._scheduler_steps_before + scheduler.last_epoch - self._scheduler_start

    # ---- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"optimizer_steps": self.optimizer_steps, "lr_rows": self.lr_rows, "scheduler_steps": self._scheduler_steps_so_far}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_steps = state["optimizer_steps"]
        self.lr_rows = [list(row) for row in state["lr_rows"]]
        self._scheduler_steps_before = state["scheduler_steps"]

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        self._scheduler_steps_so_far = self.scheduler_steps(trainer)

    _scheduler_steps_so_far = 0

    # ---- reporting -----------------------------------------------------------------------
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer, pl_module, completed=True)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._hook is not None:
            self._finish(trainer, pl_module, completed=False, check=False)

    def _finish(self, trainer: Any, pl_module: Any, completed: bool, check: bool = True) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        summary = self.summary(trainer, pl_module, completed)
        if trainer.is_global_zero:
            write_summary(Path(trainer.default_root_dir), summary, self.lr_rows)
        stopped_early = trainer.should_stop and self.optimizer_steps < summary["planned_total_steps"]
        if check and not stopped_early:
            self._check(summary)

    def _check(self, summary: dict[str, Any]) -> None:
        problems = []
        if summary["optimizer_steps"] != summary["planned_total_steps"]:
            problems.append(f"planned {summary['planned_total_steps']} optimizer steps, took {summary['optimizer_steps']}")
        if summary["scheduler_steps_expected"] is not None and summary["scheduler_steps"] != summary["scheduler_steps_expected"]:
            problems.append(f"the scheduler stepped {summary['scheduler_steps']} times, expected {summary['scheduler_steps_expected']}")
        if not problems:
            return
        message = "step ledger mismatch: " + "; ".join(problems) + f" (see {SUMMARY_FILE})."
        if self.strict:
            raise LedgerMismatchError(message)
        import warnings

        warnings.warn(message, RuntimeWarning, stacklevel=2)

    def summary(self, trainer: Any, pl_module: Any, completed: bool) -> dict[str, Any]:
        plan = training_plan(trainer)
        schedule = resolved_schedule(trainer)
        scheduler = _scheduler(trainer)
        route = route_for(trainer.strategy)
        lrs = [row[0] for row in self.lr_rows]
        final_lr = float(innermost_optimizer(trainer.optimizers[0]).param_groups[0]["lr"]) if trainer.optimizers else None
        expected_sched = None
        if schedule is not None and schedule.interval == "step" and schedule.frequency == 1:
            expected_sched = self.optimizer_steps
        return {
            "strategy": getattr(trainer, "strategy_name", type(trainer.strategy).__name__),
            "world_size": trainer.world_size,
            "data_parallel_size": data_parallel_size(trainer),
            "num_nodes": trainer.num_nodes,
            "devices": trainer.num_devices,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps,
            "limit_train_batches": trainer.limit_train_batches,
            "micro_batches_per_epoch_per_rank": plan.micro_batches_per_epoch_per_rank,
            "optimizer_steps_per_epoch": list(plan.optimizer_steps_per_epoch),
            "global_batch_size": plan.global_batch_size,
            "planned_total_steps": plan.planned_total_steps,
            "planned_warmup_steps": schedule.warmup_steps if schedule else None,
            "optimizer_steps": self.optimizer_steps,
            "scheduler_steps": self.scheduler_steps(trainer),
            "scheduler_steps_expected": expected_sched,
            "lr": {
                "first": lrs[0] if lrs else None,
                "peak": max(lrs) if lrs else None,
                "final": final_lr,
            },
            "optimizer": route.choice.resolved_class if route.choice else type(innermost_optimizer(trainer.optimizers[0])).__name__,
            "optimizer_requested": route.choice.requested if route.choice else None,
            "optimizer_reason": route.choice.reason if route.choice else None,
            "lr_scheduler": type(scheduler).__name__ if scheduler is not None else None,
            "lr_scheduler_spec": schedule.kwargs_repr if schedule else None,
            "completed": completed,
            "resumed_from": self.resumed_from,
            "elapsed_s": round(time.perf_counter() - self._started_at, 3) if self._started_at else None,
        }


def _scheduler(trainer: Any) -> Any:
    configs = trainer.lr_scheduler_configs
    return configs[0].scheduler if configs else None


def write_summary(directory: Path, summary: dict[str, Any], lr_rows: list[list[float]]) -> None:
    """Write ``summary.json`` and ``lr.csv`` atomically (temporary name, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / SUMMARY_FILE, json.dumps(summary, indent=2, default=_json_default) + "\n")
    groups = max((len(row) for row in lr_rows), default=1)
    header = ["step", "lr"] + [f"lr_group{i}" for i in range(1, groups)]
    tmp = directory / f".{LR_FILE}.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for step, row in enumerate(lr_rows, start=1):
            writer.writerow([step, *(repr(v) for v in row)])
    os.replace(tmp, directory / LR_FILE)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    return str(value)
