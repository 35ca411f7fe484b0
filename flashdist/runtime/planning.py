"""Gather a :class:`~flashdist.plan.StepPlan`'s inputs from a live Trainer, once per fit.

This is the one place that reads Lightning's state for step accounting; it replaces
``trainer.estimated_stepping_batches`` everywhere in flashdist.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

from flashdist.compat.lightning import distributed_sampler_injected, release_train_data, train_data_set_up
from flashdist.errors import ConfigError
from flashdist.plan import StepPlan, plan_steps


def training_plan(trainer: Any) -> StepPlan:
    """The step plan of the fit a ``flashdist.Trainer`` is running (its :class:`FitRun`'s).

    Example (inside a LightningModule):
        >>> plan = training_plan(self.trainer)  # doctest: +SKIP
    """
    return trainer.fit_run.plan


def data_parallel_size(trainer: Any) -> int:
    """Ranks that each see a different shard of the data (not the raw world size)."""
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("num_replicas", 1))


def compute_plan(trainer: Any) -> StepPlan:
    """Gather the plan's inputs from the live ``trainer`` and plan (once per fit: :class:`FitRun` keeps it)."""
    fit_loop = trainer.fit_loop
    set_up_here = not train_data_set_up(trainer)
    fit_loop.setup_data()  # what estimated_stepping_batches does: loads and wraps the train loader
    loader = trainer.train_dataloader
    dp_size = data_parallel_size(trainer)
    max_tokens = getattr(trainer, "max_tokens", None)
    common = _trainer_inputs(trainer, dp_size, getattr(getattr(loader, "dataset", None), "tokens_per_sample", None))
    # limit_train_batches=0: Lightning loads no train loader at all; plan_steps says why that cannot be planned.
    inputs = {"batches_per_rank": 0} if loader is None and trainer.limit_train_batches == 0 else _loader_inputs(loader, dp_size)
    plan = plan_steps(**inputs, **common)
    if max_tokens is not None:
        # Lightning's step limit lives on the epoch loop (a plain attribute; Trainer.max_steps reads it).
        trainer.fit_loop.epoch_loop.max_steps = plan.max_steps
        if trainer.max_epochs == -1 and plan.epochs:
            trainer.fit_loop.max_epochs = plan.epochs  # the epochs the budget spans (and a true "Epoch i/N" in the bar)
    lightning_batches = trainer.num_training_batches
    if plan.micro_batches_per_epoch_per_rank is not None and lightning_batches != plan.micro_batches_per_epoch_per_rank:
        raise RuntimeError(
            f"flashdist's step plan expects {plan.micro_batches_per_epoch_per_rank} batches per rank per epoch but "
            f"Lightning's loader yields {lightning_batches}; refusing to train on a schedule that would not land. "
            "This is a flashdist bug: please report it with your dataloader settings."
        )
    if set_up_here and _resuming(trainer):
        # Planned before the checkpoint restore: the loop sets the data up again after it, at the
        # resumed epoch and position, with a stateful loader's saved state (compat.lightning.release_train_data).
        release_train_data(trainer)
    return plan


def _resuming(trainer: Any) -> bool:
    """A checkpoint was chosen for this fit (flashdist resolves every ``ckpt_path`` before Lightning starts)."""
    run = getattr(trainer, "fit_run", None)
    return run is not None and run.trust.requested is not None


def plan_before_launch(trainer: Any, data: Any) -> tuple[StepPlan | None, int | None]:
    """The step plan and the per-rank batch size, in the launching process, where they can be known.

    ``data`` is what ``fit`` was given: a DataLoader, or a DataModule that offers
    ``train_loader_before_launch()`` (flashdist's do: building their data is cheap and done once
    per process). Known only for a sized map-style dataset under a plain Random/Sequential
    sampler, whose sharding Lightning's DistributedSampler makes arithmetic; anything else is
    (None, batch size or None), and each rank plans from its real loader (:func:`compute_plan`).
    Changes nothing on ``trainer``.

    Example:
        >>> plan, batch_size = plan_before_launch(trainer, DataLoader(dataset, batch_size=8))  # doctest: +SKIP
    """
    loader = data if isinstance(data, DataLoader) else None
    make_loader = getattr(data, "train_loader_before_launch", None)
    if loader is None and callable(make_loader):
        loader = make_loader()
    if not isinstance(loader, DataLoader):
        return None, None
    dp_size = data_parallel_size(trainer)
    plain = type(loader.batch_sampler) is BatchSampler and type(loader.sampler) in (RandomSampler, SequentialSampler)
    if isinstance(loader.dataset, IterableDataset) or not plain:
        return None, loader.batch_size
    if dp_size == 1 or distributed_sampler_injected(trainer):
        inputs: dict[str, Any] = {"dataset_size": len(loader.dataset), "batch_size": loader.batch_size, "drop_last": loader.drop_last}
    else:  # every rank iterates the whole loader
        inputs = {"batches_per_rank": len(loader)}
    tokens_per_sample = getattr(loader.dataset, "tokens_per_sample", None)
    return plan_steps(**inputs, **_trainer_inputs(trainer, dp_size, tokens_per_sample)), loader.batch_size


def _trainer_inputs(trainer: Any, dp_size: int, tokens_per_sample: int | None) -> dict[str, Any]:
    max_tokens = getattr(trainer, "max_tokens", None)
    return dict(
        data_parallel_size=dp_size,
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        max_epochs=trainer.max_epochs,
        # Under a token budget Lightning's max_steps is the one derived from it (compute_plan sets it).
        max_steps=-1 if max_tokens is not None else trainer.max_steps,
        # As Lightning resolved them (fast_dev_run and overfit_batches folded in), passed as they
        # are: the type carries the meaning (int 1: one batch; float 1.0: all), and `1 == 1.0`.
        limit_train_batches=trainer.limit_train_batches,
        # Lightning's fast_dev_run already set the three above; the plan records it (a smoke run
        # of N batches, shorter than the schedule it was written for). Not under overfit_batches,
        # whose limit Lightning keeps over fast_dev_run's.
        fast_dev_run=int(trainer.fast_dev_run) if not trainer.overfit_batches else 0,
        # Packed language-model data: every sample holds exactly this many tokens.
        tokens_per_sample=tokens_per_sample,
        max_tokens=max_tokens,
    )


def _sampled(sampler: Any, dataset: Any) -> int:
    try:
        return len(sampler)
    except TypeError:
        return len(dataset)


def _loader_inputs(loader: Any, dp_size: int) -> dict[str, Any]:
    if isinstance(loader, (list, tuple, dict)) or not isinstance(loader, DataLoader):
        raise ConfigError(
            f"flashdist plans steps for one training DataLoader; got {type(loader).__name__}.",
            hint="return a single torch DataLoader from train_dataloader().",
        )
    if isinstance(loader.dataset, IterableDataset):
        try:
            return {"batches_per_rank": len(loader)}
        except TypeError:
            return {}  # no length: plan_steps demands max_steps
    sampler = loader.batch_sampler.sampler if isinstance(loader.batch_sampler, BatchSampler) else None
    standard = isinstance(loader.batch_sampler, BatchSampler) and type(loader.batch_sampler) is BatchSampler
    injected = isinstance(sampler, DistributedSampler) and not sampler.drop_last and sampler.num_replicas == dp_size
    if standard and (injected or dp_size == 1):
        return {
            # the samples the sampler orders (a custom sampler's order may be shorter than the dataset)
            "dataset_size": len(sampler.dataset) if injected else _sampled(sampler, loader.dataset),
            "batch_size": loader.batch_size,
            "drop_last": loader.drop_last,
        }
    return {"batches_per_rank": len(loader)}  # a custom sampler: trust its length
