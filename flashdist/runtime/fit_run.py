"""``FitRun``: everything one fit knows, in one object.

``flashdist.Trainer.fit`` creates a ``FitRun`` for each fit and builds flashdist's callbacks
with it (:func:`flashdist.runtime.callbacks.fit_callbacks`); nothing about a fit is stored on
Lightning's objects, and no callback looks another up. The fields follow the flow
spec → plan → route → build → ledger:

- ``plan``: the :class:`~flashdist.plan.StepPlan`, computed once, on first use, from the live
  Trainer (runtime/planning.py);
- ``route``: the strategy route (strategies/), handed the plan by the Trainer, so the
  strategies never import the runtime;
- ``schedule``: what the LR scheduler was built with (set by the Task's ``configure_optimizers``);
- ``resume``: the resume policy, the schedule identity and the decision (runtime/resume.py);
- ``preemption``: whether and where the fit stopped for a signal (runtime/preemption.py);
- ``trust``: which checkpoint the fit loads, verified on every rank (runtime/trust.py);
- ``counts``: the ledger's counters (runtime/ledger.py); ``summary``: the summary it last
  wrote, which the run report receives; ``summary_sources``: more fields for it (throughput).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flashdist.optim.resolved import ResolvedSchedule
from flashdist.plan import StepPlan
from flashdist.runtime.planning import compute_plan
from flashdist.runtime.trust import CheckpointTrust
from flashdist.strategies import route_for
from flashdist.strategies.base import StrategyRoute

if TYPE_CHECKING:  # annotations only: resume.py builds on this module
    from flashdist.runtime.ledger import LrLog
    from flashdist.runtime.resume import ExecutingSchedule, ResumeDecision, ScheduleIdentity


@dataclass
class ResumeState:
    """The resume policy, and what the resume check found (runtime/resume.py fills it)."""

    policy: str = "strict"
    identity: ScheduleIdentity | None = None  # this launch's schedule identity
    schedule: ExecutingSchedule | None = None  # the schedule the run follows (saved into checkpoints)
    decision: ResumeDecision | None = None  # None: a fresh start


@dataclass
class PreemptionState:
    """Set when the ranks agreed to stop for a signal (runtime/preemption.py)."""

    preempted: bool = False
    step: int | None = None  # the optimizer step the fit stopped at
    checkpoint_path: str | None = None
    requeued: bool = False


@dataclass
class LedgerCounts:
    """What the ledger counted (runtime/ledger.py); restored from the checkpoint on resume."""

    optimizer_steps: int = 0
    lr_first: float | None = None
    lr_peak: float | None = None
    lr_last: float | None = None  # the LR the last update used (group 0): summary.json's lr.final
    scheduler_base: int = 0  # scheduler position − scheduler steps of the whole run


@dataclass
class FitRun:
    """The state of one fit of a ``flashdist.Trainer``.

    Example:
        >>> import flashdist
        >>> trainer = flashdist.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
        >>> run = trainer.fit_run
        >>> run.route.name, run.resume.policy, run.counts.optimizer_steps, run.preemption.preempted
        ('ddp', 'strict', 0, False)
    """

    trainer: Any
    strategy_name: str
    strict_ledger: bool = True
    # Trainer(compile_optimizer=...) as torch.compile kwargs (None: off); the Task compiles the step
    compile_optimizer: dict[str, Any] | None = None
    # Trainer(trust_unverified_checkpoints=...): an explicit ckpt_path without a manifest may load
    trust_unverified_checkpoints: bool = False
    route: StrategyRoute = field(init=False)
    schedule: ResolvedSchedule | None = None
    resume: ResumeState = field(default_factory=ResumeState)
    preemption: PreemptionState = field(default_factory=PreemptionState)
    counts: LedgerCounts = field(default_factory=LedgerCounts)
    trust: CheckpointTrust = field(init=False)
    summary: dict[str, Any] | None = None
    # More summary.json fields, from the callbacks that measure them (throughput); no communication.
    summary_sources: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    lr_log: LrLog | None = None
    _plan: StepPlan | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # The Trainer hands the plan to the route: the DeepSpeed strategy reads it to fill its config.
        self.route = route_for(self.trainer.strategy, plan=lambda: self.plan)
        self.trust = CheckpointTrust(trust_unverified=self.trust_unverified_checkpoints)

    @property
    def plan(self) -> StepPlan:
        """The step plan (computed on first use: it needs the fit's train loader)."""
        if self._plan is None:
            self._plan = compute_plan(self.trainer)
        return self._plan

    @property
    def planned_total_steps(self) -> int:
        """Real optimizer updates the whole run takes: the plan's, or the adapted schedule's after a resume."""
        if self.resume.decision is not None and self.resume.schedule is not None:
            return self.resume.schedule.planned_updates
        return self.plan.planned_total_steps
