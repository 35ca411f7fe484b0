"""Resume without silently changing the schedule: identity, policy, and the sampler position.

Every checkpoint carries the schedule's *identity* (what the step plan was computed from and
what it came to) and the *executing schedule* (the length and step-valued scheduler kwargs
the run follows, in optimizer steps). On resume flashdist recomputes the plan for the new
launch and compares identities, as pure arithmetic (:func:`decide`):

- equal: continue; the scheduler restores its step counter and every LR equals the
  uninterrupted run's.
- different, ``resume_policy="strict"`` (default): :class:`~flashdist.ConfigError` listing
  each change, before any step.
- ``"keep_schedule"``: keep the saved total and step-valued kwargs (warmup...) in optimizer
  steps; the run ends when that total is reached, however many epochs it takes.
- ``"rescale"``: keep the budget in samples. With ``r = saved global batch / new global
  batch``, the total, the step-valued kwargs and the current position are multiplied by ``r``
  and rounded to the nearest step, so the LR as a function of samples seen is unchanged
  (exactly so when the products are whole numbers).
- ``"keep_global_batch"``: keep the saved global batch by recomputing
  ``accumulate_grad_batches`` for the new data-parallel size (runtime/global_batch.py, applied
  before the fit plans); the schedule then continues step for step, as saved.

A changed optimizer, scheduler spec or learning rate is refused under every policy: no
policy can say what the curve should then be. Adapting rebuilds the scheduler from the
registry with the chosen kwargs and replays its step counter (the checkpoint holds the
counter, not derived state); this needs a registry scheduler stepped per optimizer step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from lightning.pytorch import Callback

from flashdist.compat.lightning import keep_loader_states_of_trained_batches, loader_states_of_trained_batches, save_loader_states
from flashdist.data.sampler import ResumableDistributedSampler, sampler_for_loader
from flashdist.errors import ConfigError
from flashdist.plan import StepPlan
from flashdist.runtime.fit_run import FitRun, ResumeState
from flashdist.runtime.planning import data_parallel_size
from flashdist.runtime.resume_steps import (
    QuietReplayWarning,
    apply_decision,
    batches_done_on_this_topology,
    continue_order,
    epoch_position,
    install_sampler,
    resolved_step_args,
    resume_epoch_position,
    restore_rng_states,
    warn_unresumable_epoch,
    rng_states,
)

__all__ = ["RESUME_POLICIES", "ResumeGuard", "batches_done_on_this_topology", "decide", "diff_identity", "resume_summary"]

ResumePolicy = Literal["strict", "keep_schedule", "rescale", "keep_global_batch"]
RESUME_POLICIES: tuple[str, ...] = ("strict", "keep_schedule", "rescale", "keep_global_batch")
_SPEC_FIELDS = ("optimizer", "lr_scheduler", "learning_rate")


@dataclass(frozen=True)
class ScheduleIdentity:
    """What the step plan was computed from and came to, as configured on this launch."""

    planned_total_steps: int
    warmup_steps: int | None
    global_batch_size: int | None
    data_parallel_size: int
    accumulate_grad_batches: int
    optimizer: str
    lr_scheduler: str | None
    learning_rate: float | None


@dataclass(frozen=True)
class ExecutingSchedule:
    """The schedule a run follows, in optimizer steps of its current topology.

    ``update_offset`` = real optimizer updates taken − schedule position; it is non-zero
    only after a rescale (e.g. 8 updates at batch 16 = position 16 at batch 8: offset -8).
    """

    total_steps: int
    step_args: tuple[tuple[str, int], ...]
    global_batch_size: int | None
    update_offset: int = 0
    policy: str | None = None  # how it was adapted on the last topology change; None: as configured

    @property
    def planned_updates(self) -> int:
        return self.total_steps + self.update_offset


@dataclass(frozen=True)
class ResumeDecision:
    schedule: ExecutingSchedule
    position: int  # optimizer steps into ``schedule`` (Lightning's global_step after resume)
    changes: tuple[str, ...]
    rebuild: bool  # the scheduler built from the config is not the one to follow


def diff_identity(saved: ScheduleIdentity, current: ScheduleIdentity) -> list[str]:
    """Each field that changed, as ``"name: saved → current"``.

    Example:
        >>> a = ScheduleIdentity(16, 2, 16, 2, 1, "adamw()", "linear()", 0.01)
        >>> diff_identity(a, replace(a, data_parallel_size=1, global_batch_size=8, planned_total_steps=32))
        ['planned_total_steps: 16 → 32', 'global_batch_size: 16 → 8', 'data_parallel_size: 2 → 1']
    """
    return [
        f"{f.name}: {getattr(saved, f.name)!r} → {getattr(current, f.name)!r}"
        for f in fields(ScheduleIdentity)
        if getattr(saved, f.name) != getattr(current, f.name)
    ]


def decide(
    saved: ScheduleIdentity,
    saved_schedule: ExecutingSchedule,
    current: ScheduleIdentity,
    built: ExecutingSchedule,
    policy: ResumePolicy,
    position: int,
) -> ResumeDecision:
    """What a resume at ``position`` (saved global_step) does; raises ConfigError to refuse.

    Example (a 2-rank run resumed on 1 rank after 8 of its 16 steps):
        >>> saved = ScheduleIdentity(16, 2, 16, 2, 1, "adamw()", "linear()", 0.01)
        >>> now = replace(saved, planned_total_steps=32, warmup_steps=4, global_batch_size=8, data_parallel_size=1)
        >>> old = ExecutingSchedule(16, (("num_training_steps", 16), ("num_warmup_steps", 2)), 16)
        >>> new = ExecutingSchedule(32, (("num_training_steps", 32), ("num_warmup_steps", 4)), 8)
        >>> d = decide(saved, old, now, new, "rescale", position=8)
        >>> d.schedule.total_steps, d.schedule.step_args, d.position, d.schedule.planned_updates
        (32, (('num_training_steps', 32), ('num_warmup_steps', 4)), 16, 24)
    """
    changes = tuple(diff_identity(saved, current))
    if not changes:
        rebuild = saved_schedule.step_args != built.step_args or saved_schedule.total_steps != built.total_steps
        return ResumeDecision(saved_schedule, position, changes, rebuild)
    listing = "; ".join(changes)
    spec_changes = [c for c in changes if c.split(":")[0] in _SPEC_FIELDS]
    if spec_changes:
        raise ConfigError(
            f"the checkpoint was trained with a different optimizer or schedule ({'; '.join(spec_changes)}).",
            hint="resume with the optimizer, lr_scheduler and learning_rate it was saved with; "
            "resume_policy adapts a schedule to a new topology or length, not to a new schedule.",
        )
    if policy == "strict":
        raise ConfigError(
            f"resuming would change the LR schedule: {listing}.",
            accepted=RESUME_POLICIES,
            hint="resume on the topology and settings the checkpoint was saved with, or choose "
            "Trainer(resume_policy='keep_schedule') (same steps, same warmup), "
            "resume_policy='rescale' (same samples, same LR curve over samples) or "
            "resume_policy='keep_global_batch' (same global batch: accumulation adapts, same steps).",
        )
    return _ADAPT[policy](saved_schedule, current, position, changes)


def _keep_schedule(saved: ExecutingSchedule, current: ScheduleIdentity, position: int, changes: tuple[str, ...]) -> ResumeDecision:
    """The saved total and step-valued kwargs, in optimizer steps."""
    schedule = replace(saved, global_batch_size=current.global_batch_size, policy="keep_schedule")
    return ResumeDecision(schedule, position, changes, rebuild=True)


def _rescale(saved: ExecutingSchedule, current: ScheduleIdentity, position: int, changes: tuple[str, ...]) -> ResumeDecision:
    """The budget in samples: total, step-valued kwargs and position times saved / new global batch."""
    if saved.global_batch_size is None or current.global_batch_size is None:
        raise ConfigError(
            "resume_policy='rescale' needs the global batch size, unknown for this loader.",
            hint="use resume_policy='keep_schedule', or a DataLoader with a batch_size.",
        )
    ratio = saved.global_batch_size / current.global_batch_size
    new_position = round(position * ratio)
    schedule = ExecutingSchedule(
        total_steps=round(saved.total_steps * ratio),
        step_args=tuple((name, round(value * ratio)) for name, value in saved.step_args),
        global_batch_size=current.global_batch_size,
        update_offset=saved.update_offset + position - new_position,
        policy="rescale",
    )
    return ResumeDecision(schedule, new_position, changes, rebuild=True)


def _keep_global_batch(saved: ExecutingSchedule, current: ScheduleIdentity, position: int, changes: tuple[str, ...]) -> ResumeDecision:
    """The saved schedule step for step; the accumulation was already set (runtime/global_batch.py)
    so that the global batch is the saved one: anything else is refused."""
    if current.global_batch_size is None or current.global_batch_size != saved.global_batch_size:
        raise ConfigError(
            f"resume_policy='keep_global_batch' keeps the global batch of {saved.global_batch_size}, but this "
            f"fit's is {current.global_batch_size} ({'; '.join(changes)}).",
            hint="keep the batch_size the checkpoint was saved with (flashdist then sets accumulate_grad_batches), "
            "or choose resume_policy='rescale'.",
        )
    return ResumeDecision(replace(saved, policy="keep_global_batch"), position, changes, rebuild=True)


# How each adapting policy turns the saved schedule into the one to follow; a new policy is one
# function here and its name in RESUME_POLICIES.
_ADAPT = {"keep_schedule": _keep_schedule, "rescale": _rescale, "keep_global_batch": _keep_global_batch}


# ---- reading the live fit ---------------------------------------------------------------
def current_identity(trainer: Any, plan: StepPlan, step_args: dict[str, int]) -> ScheduleIdentity:
    module = trainer.lightning_module
    optimizer_spec = getattr(module, "optimizer_spec", None)
    scheduler_spec = getattr(module, "scheduler_spec", None)
    warmup = next((v for k, v in step_args.items() if "warmup" in k), None)
    return ScheduleIdentity(
        planned_total_steps=plan.planned_total_steps,
        warmup_steps=warmup,
        global_batch_size=plan.global_batch_size,
        data_parallel_size=data_parallel_size(trainer),
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        optimizer=optimizer_spec.describe() if optimizer_spec else type(trainer.optimizers[0]).__name__,
        lr_scheduler=scheduler_spec.describe() if scheduler_spec else None,
        learning_rate=getattr(module, "learning_rate", None),
    )


# ---- the callback -------------------------------------------------------------------------
class ResumeGuard(Callback):
    """Saves the schedule identity and the epoch position; on resume, checks and applies the policy.

    Its state (policy, identity, decision) is the fit's ``run.resume``; it runs before the
    ledger (runtime/callbacks.py), so the ledger counts on the scheduler decided here.
    """

    def __init__(self, run: FitRun):
        if run.resume.policy not in RESUME_POLICIES:
            raise ConfigError(f"resume_policy={run.resume.policy!r} is not known.", accepted=RESUME_POLICIES)
        self.run = run
        self._loaded: dict[str, Any] | None = None
        self._sampler: ResumableDistributedSampler | None = None
        self._quiet: QuietReplayWarning | None = None
        self._rng: dict[str, Any] | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state

    def train_sampler(self, loader: Any, num_replicas: int, rank: int) -> ResumableDistributedSampler | None:
        """The training loader's sampler, already where the resumed epoch continues.

        Lightning creates the first epoch's iterator before ``on_train_start`` (and before it sets
        the sampler's epoch); with ``num_workers > 0`` that iterator draws its first indices at
        once. The checkpoint's state and the loop's epoch are restored by then.
        """
        sampler = sampler_for_loader(loader, num_replicas=num_replicas, rank=rank)
        if sampler is None:
            return None
        trainer = self.run.trainer
        sampler.set_epoch(trainer.current_epoch)
        if self._loaded:
            continue_order(sampler, self._loaded.get("order_seed"))
            position = self._loaded.get("position")
            if position and position["epoch"] == trainer.current_epoch and 0 < position["samples_done"] < len(sampler.dataset):
                sampler.resume_at(position["epoch"], position["samples_done"])
        return sampler

    def state_dict(self) -> dict[str, Any]:
        state = self.run.resume
        if state.identity is None or state.schedule is None:
            return {}
        position = epoch_position(self.run.trainer, self._sampler) if self._sampler is not None else None
        saved = {"identity": asdict(state.identity), "schedule": asdict(state.schedule), "position": position}
        if self._sampler is not None:
            saved["order_seed"] = self._sampler.seed
        # The global RNGs as this step left them (rank 0's; see restore_rng_states for which ranks load them).
        saved["rng"] = rng_states()
        saved["world_size"] = self.run.trainer.world_size
        return saved

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        state = self.run.resume
        plan = self.run.plan
        step_args = resolved_step_args(trainer, plan)
        state.identity = current_identity(trainer, plan, step_args)
        built = ExecutingSchedule(plan.planned_total_steps, tuple(step_args.items()), plan.global_batch_size)
        state.schedule = built
        self._sampler = install_sampler(trainer)
        keep_loader_states_of_trained_batches(trainer)
        if self._sampler is not None:  # the epoch is not replayed: Lightning's warning would be wrong
            self._quiet = QuietReplayWarning()
        if not self._loaded or "identity" not in self._loaded:
            return
        saved = ScheduleIdentity(**self._loaded["identity"])
        decision = decide(saved, _schedule_from(self._loaded["schedule"]), state.identity, built, state.policy, trainer.global_step)
        state.decision, state.schedule = decision, decision.schedule
        if decision.rebuild:
            apply_decision(trainer, plan, decision.schedule.total_steps, dict(decision.schedule.step_args), decision.position, state.policy)
        if self._sampler is None:
            warn_unresumable_epoch(trainer)
        if self._sampler is not None:
            continue_order(self._sampler, self._loaded.get("order_seed"))
            resume_epoch_position(trainer, self._sampler, self._loaded.get("position"))
        self._rng = self._loaded.get("rng") if self._loaded.get("world_size", trainer.world_size) == trainer.world_size else None
        if self._rng is not None:
            self.on_train_batch_start = self._restore_rng  # once, then removed from Lightning's per-step dispatch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        keep_loader_states_of_trained_batches(trainer)  # a reloaded train loader comes with a new fetcher

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # A stateful loader without a length is a batch ahead of training at a save (Lightning's prefetch):
        # save its state as of the trained batches, or the resume would skip one.
        states = loader_states_of_trained_batches(trainer)
        if states is not None:
            save_loader_states(checkpoint, states)

    def _restore_rng(self, trainer: Any, *args: Any) -> None:
        """Just before the first step after the resume (after its batch was fetched, as in the uninterrupted run)."""
        restore_rng_states(self._rng)
        self._rng, self.on_train_batch_start = None, None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._unquiet()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._unquiet()

    def _unquiet(self) -> None:
        if self._quiet is not None:
            self._quiet.remove()
            self._quiet = None


def resume_summary(state: ResumeState) -> dict[str, Any]:
    """The resume facts for ``summary.json``."""
    out: dict[str, Any] = {"resume_policy": state.policy}
    if state.decision is not None:
        out["resume_changes"] = list(state.decision.changes)
        out["resume_adapted_by"] = state.schedule.policy if state.schedule else None
        out["schedule_total_steps"] = state.schedule.total_steps if state.schedule else None
    return out


def _schedule_from(saved: dict[str, Any]) -> ExecutingSchedule:
    saved = dict(saved)
    saved["step_args"] = tuple((str(k), int(v)) for k, v in saved["step_args"])
    return ExecutingSchedule(**saved)
