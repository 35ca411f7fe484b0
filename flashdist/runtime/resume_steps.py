"""Reading and changing the live fit for a resume: each step a named function, tested on its own.

:func:`~flashdist.runtime.resume.decide` says what a resume does (pure arithmetic);
:func:`apply_decision` does it, as these steps, in this order:

1. :func:`set_optimizer_step_count`: Lightning's ``global_step`` at the decided position (a
   rescale moves it);
2. :func:`rebuild_scheduler`: a scheduler built from the registry with the decided step-valued
   kwargs and replayed to the position; :func:`use_scheduler` makes it the fit's, and
   :func:`use_scheduler_in_deepspeed` the DeepSpeed engine's (which steps it there);
3. :func:`end_at_schedule_total`: the epoch limit: the schedule's total ends the run;

and, on every resume, :func:`resume_epoch_position`: the sampler skips what the interrupted
epoch consumed, and Lightning's batch counters count it in this topology's batches. Every
fit installs the resumable sampler (:func:`install_sampler`), so that each checkpoint records
where in the epoch it was taken (:func:`epoch_position`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.utilities.warnings import PossibleUserWarning

from flashdist.compat.lightning import add_batches_done, batches_done_in_epoch, set_optimizer_steps_done
from flashdist.data.sampler import ResumableDistributedSampler, has_own_state, install_resumable_sampler
from flashdist.errors import ConfigError
from flashdist.optim.build import instantiate_scheduler, resolve_scheduler_kwargs
from flashdist.plan import StepPlan

# Lightning warns that a mid-epoch resume replays the epoch; with the resumable sampler it does not.
_REPLAY_WARNING = "You're resuming from a checkpoint that ended before the epoch ended"


def apply_decision(trainer: Any, plan: StepPlan, schedule_total: int, step_args: dict[str, int], position: int, policy: str) -> None:
    """Make the live fit follow a schedule of ``schedule_total`` steps with ``step_args``, at ``position``.

    Example (in ``on_train_start``, once :func:`~flashdist.runtime.resume.decide` asked for a rebuild):
        >>> apply_decision(trainer, plan, 32, {"num_training_steps": 32, "num_warmup_steps": 4}, 16, "rescale")  # doctest: +SKIP
    """
    if position != trainer.global_step:
        set_optimizer_step_count(trainer, position)
    scheduler = rebuild_scheduler(trainer, plan, step_args, position, policy)
    if scheduler is not None:
        use_scheduler(trainer, scheduler)
        use_scheduler_in_deepspeed(trainer.strategy, scheduler)
    end_at_schedule_total(trainer, schedule_total)


# ---- the steps ------------------------------------------------------------------------------
def set_optimizer_step_count(trainer: Any, steps: int) -> None:
    """Lightning counts ``steps`` optimizer steps as done (``trainer.global_step == steps``)."""
    set_optimizer_steps_done(trainer, steps)


def rebuild_scheduler(trainer: Any, plan: StepPlan, step_args: dict[str, int], position: int, policy: str) -> Any:
    """A new scheduler of the fit's spec with ``step_args``, stepped ``position`` times (None: the fit has none)."""
    config = _scheduler_config(trainer)
    if config is None:
        return None
    spec = _registry_spec(trainer)
    if spec is None or config.interval != "step" or config.frequency != 1:
        raise ConfigError(
            f"resume_policy={policy!r} must rebuild the LR scheduler, which needs a registry "
            "scheduler stepped once per optimizer step; this fit's is not.",
            hint="resume on the topology the checkpoint was saved with (resume_policy='strict').",
        )
    optimizer = config.scheduler.optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LR-default notices, and step() before optimizer.step()
        kwargs = {**resolve_scheduler_kwargs(spec, _ConfiguredLRs.of(optimizer, trainer.lightning_module), plan), **step_args}
        for group in optimizer.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        scheduler, _ = instantiate_scheduler(optimizer, spec, kwargs)
        for _ in range(position):
            scheduler.step()
    return scheduler


def use_scheduler(trainer: Any, scheduler: Any) -> None:
    """The fit's (first) scheduler config steps ``scheduler`` from now on."""
    trainer.lr_scheduler_configs[0].scheduler = scheduler


def use_scheduler_in_deepspeed(strategy: Any, scheduler: Any) -> None:
    """A DeepSpeed engine that steps its own scheduler steps ``scheduler`` instead (no-op elsewhere)."""
    engine = getattr(strategy, "deepspeed_engine", None)
    if engine is not None and getattr(engine, "lr_scheduler", None) is not None:
        engine.lr_scheduler = scheduler


def end_at_schedule_total(trainer: Any, total_steps: int) -> None:
    """The run ends after ``total_steps`` optimizer steps, however many epochs that takes."""
    trainer.fit_loop.epoch_loop.max_steps = total_steps
    trainer.fit_loop.max_epochs = -1


def install_sampler(trainer: Any) -> ResumableDistributedSampler | None:
    """Swap the train loader's sampler for a resumable one (None: a sampler flashdist cannot resume)."""
    return install_resumable_sampler(trainer.train_dataloader)


def epoch_position(trainer: Any, sampler: ResumableDistributedSampler) -> dict[str, int]:
    """Where in the epoch the fit is, in samples of the global order (what a checkpoint records)."""
    batches = batches_done_in_epoch(trainer)
    return {"epoch": trainer.current_epoch, "samples_done": batches * trainer.train_dataloader.batch_size * sampler.num_replicas}


def continue_order(sampler: ResumableDistributedSampler, saved_seed: int | None) -> None:
    """A resumed run keeps drawing the order from the checkpoint's seed (a new ``seed_everything`` changes later runs, not this one)."""
    if saved_seed is not None:
        sampler.seed = int(saved_seed)


def rng_states() -> dict[str, Any]:
    """This process's global RNG states (torch CPU and CUDA, numpy, Python's ``random``), for a checkpoint.

    Example:
        >>> sorted(rng_states())  # doctest: +ELLIPSIS
        [...'python', 'torch'...]
    """
    import random

    import torch

    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This rank's device only: the other devices of the node are other ranks' (rank 0 never
        # draws on them), and every rank restores this state onto its own device.
        states["torch_cuda"] = torch.cuda.get_rng_state()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        states["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]  # plain types: weights_only loads
    except ImportError:
        pass
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the global RNGs to what :func:`rng_states` recorded.

    Every rank loads the checkpoint's (rank 0's) states, when the world size is the saved one:
    exact where the ranks draw alike (``seed_everything`` seeds them equally, and dropout or
    any other draw in the step happens on every rank), which is the usual case.
    """
    import random

    import torch

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "torch_cuda" in states and torch.cuda.is_available():
        cuda = states["torch_cuda"]
        if isinstance(cuda, (list, tuple)):  # written before this state was the saving rank's device's alone
            cuda = cuda[0]  # rank 0 trained on device 0
        torch.cuda.set_rng_state(cuda)  # onto this rank's current device
    if "numpy" in states:
        import numpy as np

        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


class UnresumableEpochWarning(UserWarning):
    """A mid-epoch resume of data flashdist cannot position: what the resumed epoch then trains on."""


def warn_unresumable_epoch(trainer: Any) -> None:
    """Say exactly what a mid-epoch resume does to data without a resumable order (an iterable, a custom batch sampler).

    Lightning restores a loader with its own state (``StatefulDataLoader``) itself (its state is in
    the checkpoint); any other such loader starts its epoch over while the batch counter continues.
    """
    batches = batches_done_in_epoch(trainer)
    loader = trainer.train_dataloader
    if not batches or has_own_state(loader) or not trainer.is_global_zero:
        return
    per_epoch = trainer.num_training_batches
    warnings.warn(
        unresumable_epoch_message(batches, trainer.current_epoch, type(getattr(loader, "dataset", loader)).__name__,
                                  per_epoch if per_epoch != float("inf") else None),
        UnresumableEpochWarning,
        stacklevel=2,
    )


def unresumable_epoch_message(batches: int, epoch: int, what: str, batches_per_epoch: int | None) -> str:
    """What a resume ``batches`` into ``epoch`` of a loader that starts over trains; ``batches_per_epoch`` None: no length.

    Lightning counts the epoch as ``batches`` in: a loader with a length ends the epoch at its
    length, so as many batches at its end are not trained; one without ends when exhausted.

    Example:
        >>> unresumable_epoch_message(2, 0, "Stream", 5).split(": ", 1)[1][:60]
        'the loader starts the epoch over, so its first 2 batch(es) p'
    """
    if batches_per_epoch is None:
        end = "and the epoch ends when the loader is exhausted (or at max_steps)"
    else:
        end = (f"and the epoch ends after {batches_per_epoch - batches} of its {batches_per_epoch} batches (Lightning counts "
               f"the {batches} as done), so its last {batches} batch(es) per rank are not trained in this epoch")
    return (
        f"resuming {batches} batch(es) into epoch {epoch} of a training loader whose position flashdist cannot restore "
        f"({what} without a sampler it can split): the loader starts the epoch over, so its first {batches} batch(es) "
        f"per rank are trained again, {end}. For an exact resume use a map-style dataset, or torchdata's "
        "StatefulDataLoader (Lightning saves and restores its state)."
    )


def resume_epoch_position(trainer: Any, sampler: ResumableDistributedSampler, position: dict[str, int] | None) -> None:
    """Continue the checkpoint's epoch with the samples it had not seen (nothing if it ended on an epoch)."""
    if not position or position["epoch"] != trainer.current_epoch:
        return
    samples_done = position["samples_done"]
    if not 0 < samples_done < len(sampler.dataset):
        return
    sampler.resume_at(position["epoch"], samples_done)
    samples_per_batch = trainer.train_dataloader.batch_size * sampler.num_replicas
    shift = batches_done_on_this_topology(samples_done, samples_per_batch) - batches_done_in_epoch(trainer)
    if shift:  # another topology: count the epoch's batches in this one's units
        add_batches_done(trainer, shift)


def batches_done_on_this_topology(samples_done: int, samples_per_batch: int) -> int:
    """Batches per rank that cover the ``samples_done`` an interrupted epoch consumed.

    Example:
        >>> batches_done_on_this_topology(48, 8), batches_done_on_this_topology(48, 16)
        (6, 3)
    """
    batches, rest = divmod(samples_done, samples_per_batch)
    if rest:
        raise ConfigError(
            f"the checkpoint stopped mid-epoch after {samples_done} samples, which is not a whole number of "
            f"batches of {samples_per_batch} samples (batch size × ranks) on this topology.",
            hint="resume from an end-of-epoch checkpoint, or on the topology it was saved with.",
        )
    return batches


class QuietReplayWarning:
    """Silences Lightning's "resuming ... before the epoch ended" warning until :meth:`remove` (at the fit's end).

    The warning fires in the epoch loop, after ``on_train_start``, so a ``catch_warnings``
    block around a hook cannot reach it; this filter is removed when the fit ends instead of
    staying in the process.
    """

    def __init__(self) -> None:
        warnings.filterwarnings("ignore", message=_REPLAY_WARNING, category=PossibleUserWarning)
        self._entry = warnings.filters[0]

    def remove(self) -> None:
        if self._entry in warnings.filters:  # gone already if a catch_warnings block around the fit ended
            warnings.filters.remove(self._entry)


# ---- reading the live fit -------------------------------------------------------------------
def resolved_step_args(trainer: Any, plan: StepPlan) -> dict[str, int]:
    """The scheduler kwargs measured in optimizer steps (its total, warmup, ...), as configured."""
    spec, config = _registry_spec(trainer), _scheduler_config(trainer)
    if spec is None or config is None:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = resolve_scheduler_kwargs(spec, _ConfiguredLRs.of(config.scheduler.optimizer, trainer.lightning_module), plan)
    names = [spec.entry.total_steps_arg, *spec.entry.duration_args]
    return {n: int(kwargs[n]) for n in names if n and isinstance(kwargs.get(n), int) and not isinstance(kwargs[n], bool)}


def _scheduler_config(trainer: Any) -> Any:
    configs = trainer.lr_scheduler_configs
    return configs[0] if configs else None


def _registry_spec(trainer: Any) -> Any:
    spec = getattr(trainer.lightning_module, "scheduler_spec", None)
    if spec is None or spec.entry is None or spec.entry.is_recipe or "schedulers" in spec.kwargs:
        return None
    return spec


@dataclass(frozen=True)
class _ConfiguredLRs:
    """The optimizer's param groups as the scheduler first saw them, for LR-relative defaults.

    OneCycleLR's ``max_lr`` and friends come from the configured LR: not from the mid-schedule
    LR, nor from ``initial_lr`` (which OneCycleLR sets to max_lr / div_factor).
    """

    param_groups: list[dict[str, Any]]

    @classmethod
    def of(cls, optimizer: Any, module: Any) -> _ConfiguredLRs:
        spec = getattr(module, "optimizer_spec", None)
        configured = getattr(module, "learning_rate", None)
        if configured is None and spec is not None:
            configured = spec.kwargs.get("lr")
        groups = [{**g, "lr": g.get("initial_lr", g["lr"])} for g in optimizer.param_groups]
        if configured is not None:
            groups[0]["lr"] = configured
        return cls(groups)
