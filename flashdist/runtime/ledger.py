"""The step ledger: counts real optimizer updates and scheduler steps, proves plan == executed.

Optimizer updates are counted where they happen: a step post-hook on the innermost torch
optimizer (under DeepSpeed, the optimizer inside the engine's ZeRO wrapper, so an update the
engine skips is not counted). Each fit writes ``summary.json`` and ``lr.csv`` (step, each
param group's LR, the update's pre-clip ``grad_norm`` from the strategy route) into
``default_root_dir`` (rank 0) and, when the fit ran to its end, fails loudly if the planned
total differs from the updates taken.

Across resumes: the checkpoint holds the counters (updates and scheduler steps taken, first
and peak LR), not the LR trace. ``lr.csv`` is appended to as the run goes (flushed whenever a
checkpoint is saved), and a resume first cuts it back to the rows of the updates the
checkpoint holds, so the file covers the whole run with one row per optimizer update and no
update twice, however many times the run was interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from flashdist.runtime.fit_run import FitRun, LedgerCounts
from flashdist.runtime.planning import data_parallel_size
from flashdist.runtime.resume import resume_summary
from flashdist.strategies.base import unwrap_optimizer
from flashdist.strategies.grad_norm import PendingNorm

SUMMARY_FILE = "summary.json"
LR_FILE = "lr.csv"


class LedgerMismatchError(RuntimeError):
    """The fit took a different number of optimizer steps than it planned."""


# Rows are formatted and written in batches (about 2.5 µs a row at 4 groups, mostly repr() of
# the floats), not kept until the end: a million-step run would otherwise hold ~200 MB of rows.
FLUSH_EVERY_ROWS = 4096


class LrLog:
    """``lr.csv`` as an append-only log: one row per optimizer update, cut back on resume.

    Example:
        >>> import tempfile; path = Path(tempfile.mkdtemp()) / "lr.csv"
        >>> log = LrLog(path, groups=1, keep_rows=0); log.append([0.1]); log.append([0.2]); log.flush()
        >>> LrLog(path, groups=1, keep_rows=1).flush(); path.read_text().splitlines()
        ['step,lr', '1,0.1']
    """

    def __init__(self, path: Path, groups: int, keep_rows: int, extra_columns: tuple[str, ...] = ()):
        self.path = path
        self.extra_columns = extra_columns
        self.rows_on_disk = 0
        self._pending: list[list[float]] = []
        kept = _read_rows(path)[:keep_rows] if keep_rows else []
        header = ["step", "lr"] + [f"lr_group{i}" for i in range(1, groups)] + list(extra_columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow(header)
            handle.writelines(line + "\n" for line in kept)
        os.replace(tmp, path)
        self.rows_on_disk = len(kept)
        self.missing_rows = keep_rows - len(kept)  # resumed in a directory without the earlier trace

    def append(self, lrs: list[float | PendingNorm]) -> None:
        self._pending.append(lrs)
        if len(self._pending) >= FLUSH_EVERY_ROWS:  # bounded memory on long runs without checkpoints
            self.flush(sync=False, known_only=True)

    def flush(self, sync: bool = True, known_only: bool = False) -> None:
        """Write the pending rows; ``sync`` also fsyncs (before a checkpoint and at the end).

        ``known_only``: stop at the first row whose norm still waits for its all-reduce (it stays
        pending, with the rows after it); otherwise such a norm is written as nan.
        """
        count = len(self._pending)
        if known_only:
            count = next((i for i, row in enumerate(self._pending) if any(_unknown(v) for v in row)), count)
        if not count:
            return
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            for row in self._pending[:count]:
                self.rows_on_disk += 1
                writer.writerow([self.rows_on_disk + self.missing_rows, *(repr(float(v)) for v in row)])
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        del self._pending[:count]

    def read_rows(self) -> list[list[float]]:
        """Every row's LRs (every param group's, one row per update; not the extra columns), pending rows included."""
        self.flush()
        end = -len(self.extra_columns) or None
        return [[float(v) for v in line.split(",")[1:end]] for line in _read_rows(self.path)]


def _lr_entry(lr: Any) -> Any:
    """A group's LR for the row: a float, NaN for None, a tensor kept as a copy (the optimizer updates its own in place)."""
    if lr is None:
        return math.nan
    if isinstance(lr, torch.Tensor):
        return lr.detach().clone()
    return float(lr)


def _unknown(value: float | PendingNorm) -> bool:
    return isinstance(value, PendingNorm) and value.value is None


def _read_rows(path: Path) -> list[str]:
    if not path.exists():
        return []
    return path.read_text().splitlines()[1:]


class StepLedger(Callback):
    """Counts and checks; one per fit of every ``flashdist.Trainer``, its counters in ``run.counts``."""

    def __init__(self, run: FitRun):
        self.run = run
        self.strict = run.strict_ledger
        self.resumed_from: str | None = None
        self._restored: dict[str, Any] = {}
        self._hook: Any = None
        self._started_at = 0.0
        # Tensor LRs' first and running peak, kept on the device and read on the host only when reported.
        self._lr_first_tensor: torch.Tensor | None = None
        self._lr_peak_tensor: torch.Tensor | None = None  # updated in place: no allocation per update
        self._lr_last_tensor: torch.Tensor | None = None

    @property
    def optimizer_steps(self) -> int:
        return self.run.counts.optimizer_steps

    # ---- counting ----------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        run = self.run
        self.resumed_from = trainer.ckpt_path
        restored = self._restored
        self._lr_first_tensor = self._lr_peak_tensor = self._lr_last_tensor = None
        counts = run.counts = LedgerCounts(
            optimizer_steps=restored.get("optimizer_steps", 0), lr_first=restored.get("lr_first"), lr_peak=restored.get("lr_peak"),
            lr_last=restored.get("lr_last"),
        )
        scheduler = _scheduler(trainer)
        counts.scheduler_base = (_scheduler_position(scheduler) or 0) - restored.get("scheduler_steps", 0)
        if trainer.optimizers:
            optimizer = unwrap_optimizer(trainer.optimizers[0])
            # compiler.disable: a compiled optimizer step (optim/compiled.py) calls torch's step post-hooks
            # inside its graph; traced there, the ledger's own state would recompile it every update.
            self._hook = run.route.register_step_counter(trainer.optimizers[0], torch.compiler.disable(self._count))
            if trainer.is_global_zero:
                path = Path(trainer.default_root_dir) / LR_FILE
                run.lr_log = LrLog(path, groups=len(optimizer.param_groups), keep_rows=counts.optimizer_steps, extra_columns=("grad_norm",))
        self._started_at = time.perf_counter()
        if trainer.is_global_zero:  # a crash from here on leaves completed=false, never a stale true
            write_summary(Path(trainer.default_root_dir), self.summary(trainer, pl_module, completed=False))

    def _count(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        counts = self.run.counts
        counts.optimizer_steps += 1
        # lr None: the optimizer sizes each step itself (transformers' Adafactor with relative_step),
        # so there is no group LR to report: NaN in lr.csv, None in summary.json. A tensor LR (a
        # compiled or capturable step, a fused kernel on a GPU) stays a tensor until lr.csv is
        # written: reading it now would be a host sync per update.
        lrs = [_lr_entry(group["lr"]) for group in optimizer.param_groups]
        first = lrs[0]
        if isinstance(first, torch.Tensor):  # a copy (_lr_entry): the scheduler updates the group's own in place
            if self._lr_peak_tensor is None:
                self._lr_first_tensor, self._lr_peak_tensor = first, first.clone()
            else:
                torch.maximum(self._lr_peak_tensor, first, out=self._lr_peak_tensor)
            self._lr_last_tensor = first
        elif first == first:  # not NaN
            if counts.lr_first is None:
                counts.lr_first = first
            counts.lr_peak = first if counts.lr_peak is None else max(counts.lr_peak, first)
            counts.lr_last = first
        if self.run.lr_log is not None:
            # The pre-clip total gradient norm of this update (strategies/grad_norm.py); NaN if
            # unknown. Under FSDP2 it may still wait for its batch's all-reduce (a PendingNorm,
            # filled in before lr.csv is flushed for a checkpoint or at the end).
            norm = self.run.route.grad_norm_entry() if self.run.route is not None else None
            self.run.lr_log.append([*lrs, math.nan if norm is None else norm])

    def _settle_lr_counts(self) -> None:
        """Fold the tensor LRs' first, peak and last into the counts (a host read: at checkpoints and reports only)."""
        first, peak, last = self._lr_first_tensor, self._lr_peak_tensor, self._lr_last_tensor
        if first is None or peak is None or last is None:
            return
        counts = self.run.counts
        self._lr_first_tensor = self._lr_peak_tensor = self._lr_last_tensor = None
        counts.lr_last = float(last)
        if counts.lr_first is None:
            counts.lr_first = float(first)
        counts.lr_peak = float(peak) if counts.lr_peak is None else max(counts.lr_peak, float(peak))

    @property
    def lr_rows(self) -> list[list[float]]:
        """The whole run's LR trace (every param group, one row per update), read back from ``lr.csv``."""
        return self.run.lr_log.read_rows() if self.run.lr_log is not None else []

    def scheduler_steps(self, trainer: Any) -> int:
        position = _scheduler_position(_scheduler(trainer))
        if position is None:
            return 0
        return position - self.run.counts.scheduler_base

    # ---- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        run = self.run
        if run.route is not None:
            run.route.finish_grad_norms()  # every rank saves together: the pending norms' collective
        if run.lr_log is not None:
            run.lr_log.flush()  # the rows this checkpoint covers are on disk before it is
        self._settle_lr_counts()
        return {
            "optimizer_steps": run.counts.optimizer_steps,
            "scheduler_steps": self.scheduler_steps(run.trainer),
            "lr_first": run.counts.lr_first,
            "lr_peak": run.counts.lr_peak,
            "lr_last": run.counts.lr_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = dict(state)

    # ---- reporting -----------------------------------------------------------------------
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer, pl_module, completed=not self.run.preemption.preempted)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._hook is not None:
            self._finish(trainer, pl_module, completed=False, check=False)

    def _finish(self, trainer: Any, pl_module: Any, completed: bool, check: bool = True) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if check and self.run.route is not None:
            # at the end of training every rank is here; after an exception perhaps not, so no
            # collective then (an unreduced norm is written as nan)
            self.run.route.finish_grad_norms()
        if self.run.lr_log is not None:
            self.run.lr_log.flush()
        summary = self.run.summary = self.summary(trainer, pl_module, completed)
        if trainer.is_global_zero:
            write_summary(Path(trainer.default_root_dir), summary)
        stopped_early = trainer.should_stop and self.optimizer_steps < summary["planned_total_steps"]
        if check and completed and not stopped_early:
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
        warnings.warn(message, RuntimeWarning, stacklevel=2)

    def summary(self, trainer: Any, pl_module: Any, completed: bool) -> dict[str, Any]:
        self._settle_lr_counts()
        run = self.run
        plan, schedule, route, counts = run.plan, run.schedule, run.route, run.counts
        scheduler = _scheduler(trainer)
        # The group's LR now: after the last scheduler step, what a resumed fit would start from (not an LR any update used).
        next_lr = unwrap_optimizer(trainer.optimizers[0]).param_groups[0]["lr"] if trainer.optimizers else None
        next_lr = float(next_lr) if next_lr is not None else None
        expected_sched = None
        if schedule is not None and schedule.interval == "step" and schedule.frequency == 1:
            expected_sched = counts.optimizer_steps
        return {
            "strategy": run.strategy_name,
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
            "planned_total_steps": run.planned_total_steps,
            "planned_warmup_steps": schedule.warmup_steps if schedule else None,
            "optimizer_steps": counts.optimizer_steps,
            "scheduler_steps": self.scheduler_steps(trainer),
            "scheduler_steps_expected": expected_sched,
            # final: the LR the last update used, as the console's "lr first / peak / final" row shows it
            "lr": {"first": counts.lr_first, "peak": counts.lr_peak, "final": counts.lr_last, "after_last_scheduler_step": next_lr},
            "optimizer": route.choice.resolved_class if route.choice else type(unwrap_optimizer(trainer.optimizers[0])).__name__,
            "optimizer_requested": route.choice.requested if route.choice else None,
            "optimizer_reason": route.choice.reason if route.choice else None,
            "lr_scheduler": type(scheduler).__name__ if scheduler is not None else None,
            "lr_scheduler_spec": schedule.kwargs_repr if schedule else None,
            "completed": completed,
            "resumed_from": self.resumed_from,
            **resume_summary(run.resume),
            "preempted": run.preemption.preempted,
            "elapsed_s": round(time.perf_counter() - self._started_at, 3) if self._started_at else None,
            **{key: value for source in run.summary_sources for key, value in source().items()},
        }


def _scheduler_position(scheduler: Any) -> int | None:
    """Steps a scheduler has taken: torch's ``last_epoch``; DeepSpeed's schedules count from -1."""
    if scheduler is None:
        return None
    if hasattr(scheduler, "last_epoch"):
        return scheduler.last_epoch
    if hasattr(scheduler, "last_batch_iteration"):
        return scheduler.last_batch_iteration + 1
    return None


def _scheduler(trainer: Any) -> Any:
    configs = trainer.lr_scheduler_configs
    return configs[0].scheduler if configs else None


def write_summary(directory: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` atomically (temporary name, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SUMMARY_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return None
    return str(value)
