"""flashdist's callbacks for one fit, built with its :class:`FitRun`, in the order their hooks must run.

Lightning calls a hook on the callbacks in list order, and flashdist's depend on that order at
``on_train_start``; :class:`FitCallbacks` lists them in that order (its fields' order is the
list's), each with the reason it comes where it does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from lightning.pytorch import Callback

from flashdist.errors import ConfigError
from flashdist.runtime.async_checkpoint import AwaitCheckpoint
from flashdist.runtime.checkpoint import check_monitored_metrics
from flashdist.runtime.export import HFExport
from flashdist.runtime.fit_run import FitRun
from flashdist.runtime.grad_norm import GradNormMonitor
from flashdist.runtime.ledger import StepLedger
from flashdist.runtime.preemption import Preemption
from flashdist.runtime.report import RunReport
from flashdist.runtime.resume import ResumeGuard
from flashdist.runtime.throughput import Throughput


class Preflight(Callback):
    """Refuses, before the first step, what would fail later: an invalid plan, a monitor never logged."""

    def __init__(self, run: FitRun):
        self.run = run

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step > 0 and trainer.ckpt_path is None:
            # Lightning keeps a Trainer's loop counters across fit calls and builds a new optimizer
            # and scheduler: the schedule would restart mid-run, from a plan counted from step 0.
            raise ConfigError(
                f"this Trainer already took {trainer.global_step} optimizer steps in an earlier fit: a second "
                "trainer.fit would continue its step and epoch counters with a new optimizer and a restarted LR schedule.",
                hint="resume with a new flashdist.Trainer and ckpt_path='last' (or a checkpoint path), "
                "or build a new Trainer to train from the start.",
            )
        check_monitored_metrics(trainer)
        self.run.plan  # noqa: B018 - computing it raises the plan's ConfigError here, before any step


@dataclass(frozen=True)
class FitCallbacks:
    """flashdist's callbacks of one fit; the fields' order is the order Lightning must call them in.

    Example:
        >>> import flashdist
        >>> trainer = flashdist.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
        >>> [type(c).__name__ for c in trainer.callbacks if c in trainer.fit_callbacks.in_order()]
        ['AwaitCheckpoint', 'Preflight', 'ResumeGuard', 'Throughput', 'GradNormMonitor', 'StepLedger', 'Preemption', 'RunReport', 'HFExport']
    """

    await_checkpoint: AwaitCheckpoint  # first at the end: an asynchronous save in flight is on disk before the summary
    preflight: Preflight  # first: refusals before any state is changed
    resume: ResumeGuard  # before the ledger: it may replace the scheduler and the step counters the ledger counts from
    throughput: Throughput  # before the ledger: its end-of-fit all-reduce gives the token counts the summary holds
    grad_norm: GradNormMonitor  # records each update's pre-clip norm (before clipping), which the ledger writes to lr.csv
    ledger: StepLedger  # before the report: it starts the LR log and writes the summary the report shows
    preemption: Preemption  # after the ledger: on a failure the ledger writes summary.json before this stops the ranks
    report: RunReport  # prints the plan once every check passed, and the table after the ledger's summary
    export: HFExport  # last: the exported model is written after everything else of the fit is

    @classmethod
    def build(cls, run: FitRun, peak_flops: float | None = None) -> FitCallbacks:
        return cls(AwaitCheckpoint(), Preflight(run), ResumeGuard(run), Throughput(run, peak_flops), GradNormMonitor(run), StepLedger(run), Preemption(run),
                   RunReport(run), HFExport(run))

    def in_order(self) -> list[Callback]:
        return [getattr(self, f.name) for f in fields(self)]
