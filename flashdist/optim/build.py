"""Builders: a spec (any accepted form) → an optimizer, or a scheduler and its Lightning config.

Public, so the registries serve outside a Task too. Scheduler kwargs are resolved here, once:
durations against the step plan, the total filled in only for schedules that take one, and
LR-relative defaults from the optimizer.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from flashdist.errors import ConfigError
from flashdist.optim.entries import SchedulerEntry
from flashdist.optim.schedulers import NESTED_SCHEDULERS
from flashdist.optim.specs import OptimizerSpec, SchedulerSpec, normalize_optimizer, normalize_scheduler
from flashdist.plan import StepPlan, parse_duration
from flashdist.registry import resolve_lazy


def build_optimizer(
    params: Iterable[Any], spec: Any, learning_rate: float | None = None, *, target: Any = None
) -> torch.optim.Optimizer:
    """Build the optimizer ``spec`` describes over ``params`` (tensors or param-group dicts).

    ``target`` replaces the registered class (strategy routes swap Adam for DeepSpeedCPUAdam).

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> build_optimizer(model.parameters(), ("adam", {"amsgrad": True}), learning_rate=1e-3).defaults["amsgrad"]
        True
    """
    spec = normalize_optimizer(spec)
    kwargs = optimizer_kwargs(spec, learning_rate)
    if spec.entry is not None and spec.entry.is_recipe:
        return spec.entry.target(params, kwargs.get("lr"))
    factory = target if target is not None else (resolve_lazy(spec.entry.target) if spec.entry else spec.factory)
    return factory(params, **kwargs)


def optimizer_kwargs(spec: OptimizerSpec, learning_rate: float | None) -> dict[str, Any]:
    kwargs = dict(spec.kwargs)
    if learning_rate is not None:
        if "lr" in kwargs and kwargs["lr"] != learning_rate:
            raise ConfigError(
                f"learning_rate={learning_rate} and the optimizer's lr={kwargs['lr']} disagree.",
                hint="give the learning rate in one place: learning_rate= on the Task.",
            )
        kwargs["lr"] = learning_rate
    return kwargs


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    spec: Any,
    num_training_steps: int | None = None,
    *,
    plan: StepPlan | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build the scheduler ``spec`` describes and return it with its Lightning config.

    ``plan`` (from the Trainer) resolves every duration unit; ``num_training_steps`` alone
    resolves step counts and fractions.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched, config = build_lr_scheduler(opt, ("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}), 100)
        >>> config["interval"], sched.get_last_lr()[0]
        ('step', 0.0)
    """
    spec = normalize_scheduler(spec)
    if spec is None:
        raise ConfigError("lr_scheduler=None cannot be built.", hint="pass a scheduler spec.")
    if plan is None and num_training_steps is not None:
        plan = _plan_of_total(num_training_steps)
    elif plan is not None and num_training_steps is not None and num_training_steps != plan.planned_total_steps:
        raise ConfigError(f"num_training_steps={num_training_steps} disagrees with the plan's {plan.planned_total_steps}.")
    kwargs = resolve_scheduler_kwargs(spec, optimizer, plan) if spec.entry is not None and not spec.entry.is_recipe else None
    return instantiate_scheduler(optimizer, spec, kwargs)


def instantiate_scheduler(optimizer: torch.optim.Optimizer, spec: SchedulerSpec, kwargs: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """Construct the scheduler from kwargs already resolved by :func:`resolve_scheduler_kwargs`."""
    if spec.entry is None:
        scheduler = spec.factory(optimizer)
    elif spec.entry.is_recipe:
        scheduler = spec.entry.target(optimizer)
    else:
        scheduler = resolve_lazy(spec.entry.target)(optimizer=optimizer, **(kwargs or {}))
    return scheduler, {**spec.lightning_config, "scheduler": scheduler}


def resolve_scheduler_kwargs(spec: SchedulerSpec, optimizer: torch.optim.Optimizer, plan: StepPlan | None) -> dict[str, Any]:
    """The kwargs the scheduler is constructed with: user's, plus what the harness fills."""
    entry = spec.entry
    assert entry is not None and not entry.is_recipe
    kwargs = dict(spec.kwargs)
    total = plan.planned_total_steps if plan is not None else None
    if entry.total_steps_arg and entry.total_steps_arg not in kwargs and not any(a in kwargs for a in entry.total_steps_alternatives):
        if total is None:
            raise ConfigError(
                f"lr_scheduler {entry.name!r} needs {entry.total_steps_arg!r}, the total optimizer steps, which is not known yet.",
                hint="inside a Task the Trainer fills it; outside, pass num_training_steps= to build_lr_scheduler.",
            )
        kwargs[entry.total_steps_arg] = total
    for arg in entry.duration_args:
        if arg in kwargs:
            kwargs[arg] = resolve_duration(kwargs[arg], arg, plan)
    _check_durations_fit(entry, kwargs, fast_dev_run=plan.fast_dev_run if plan is not None else 0)
    lr = optimizer.param_groups[0]["lr"]
    filled = {arg: factor * lr for arg, factor in entry.lr_defaults if arg not in kwargs}
    if filled:
        warnings.warn(
            f"lr_scheduler {entry.name!r}: filled {filled} from the optimizer's lr={lr}; pass them to choose otherwise.",
            UserWarning,
            stacklevel=3,
        )
        kwargs.update(filled)
    if entry.name.lower() in NESTED_SCHEDULERS and "schedulers" in kwargs:
        kwargs["schedulers"] = [_nested(optimizer, child, plan) for child in kwargs["schedulers"]]
    return kwargs


def resolve_duration(value: Any, what: str, plan: StepPlan | None) -> int:
    """A duration kwarg (see flashdist.plan) in optimizer steps."""
    amount, unit = parse_duration(value, what=what)
    if unit == "ba":
        return int(amount)
    if plan is None:
        raise ConfigError(
            f"{what}={value!r} is relative to the training length, which is not known here.",
            hint="inside a Task the Trainer resolves it; outside, pass num_training_steps= to build_lr_scheduler.",
        )
    return plan.resolve_steps(value, what=what)


def _check_durations_fit(entry: SchedulerEntry, kwargs: dict[str, Any], fast_dev_run: int = 0) -> None:
    total = kwargs.get(entry.total_steps_arg) if entry.total_steps_arg else None
    if total is None:
        return
    for arg in entry.duration_args:
        if arg in kwargs and kwargs[arg] >= total and arg != "num_decay_steps":
            message = f"lr_scheduler {entry.name!r}: {arg}={kwargs[arg]} is not less than the {total} training steps."
            if fast_dev_run:
                # A smoke run of N batches on a config written for the real run: the schedule
                # only has to build and step. Refusing would fail every fast_dev_run of a
                # config with a real warmup, so the duration is cut to the run, loudly.
                warnings.warn(
                    f"{message} fast_dev_run={fast_dev_run}: using {arg}={total} for this smoke run only.", UserWarning, stacklevel=4
                )
                kwargs[arg] = total
                continue
            raise ConfigError(message, hint="shorten the warmup, or train longer (max_epochs / max_steps).")


def _nested(optimizer: torch.optim.Optimizer, child: Any, plan: StepPlan | None) -> Any:
    if isinstance(child, torch.optim.lr_scheduler.LRScheduler):
        return child
    scheduler, _ = build_lr_scheduler(optimizer, child, plan=plan)
    return scheduler


@functools.lru_cache(maxsize=64)
def _plan_of_total(total_steps: int) -> StepPlan:
    """A plan that knows only its total: enough for step counts and fractions."""
    if total_steps < 1:
        raise ConfigError(f"num_training_steps={total_steps} must be a positive int.")
    return StepPlan(1, 1, None, total_steps, None, (), total_steps, None)


def dry_run(optimizer_spec: OptimizerSpec, scheduler_spec: SchedulerSpec | None, learning_rate: float | None) -> None:
    """Build both on a dummy parameter, turning any failure into a ConfigError now, not at fit."""
    required = scheduler_spec.entry.requires_optimizer if scheduler_spec is not None and scheduler_spec.entry else None
    if required is not None and (optimizer_spec.entry is None or optimizer_spec.entry.name.lower() != required):
        raise ConfigError(
            f"lr_scheduler {scheduler_spec.name!r} works only with optimizer {required!r}, got {optimizer_spec.name!r}.",
            hint=f"pass optimizer={required!r}.",
        )
    dummy = [torch.nn.Parameter(torch.zeros(2, 2))]
    if optimizer_spec.entry is not None and optimizer_spec.entry.provider == "deepspeed":
        optimizer = torch.optim.SGD(dummy, lr=learning_rate or 1e-3, momentum=0.9)  # DeepSpeed JIT-builds its ops: not now
    else:
        optimizer = _attempt(f"optimizer {optimizer_spec.describe()}", lambda: build_optimizer(dummy, optimizer_spec, learning_rate))
    if scheduler_spec is not None:
        _attempt(
            f"lr_scheduler {scheduler_spec.describe()}",
            lambda: build_lr_scheduler(optimizer, scheduler_spec, plan=_placeholder_plan(scheduler_spec)),
        )


def _placeholder_plan(spec: SchedulerSpec) -> StepPlan:
    """A plan long enough for any step count the spec names, so the dry build checks kwargs only."""
    longest = 0
    for value in spec.kwargs.values():
        if isinstance(value, int) and not isinstance(value, bool):
            longest = max(longest, value)
    total = max(1000, 10 * longest)
    return StepPlan(1, 1, 1000, -1, total // 1000 or 1, (max(1, math.ceil(total / 1000)),) * 1000, total, None)


def _attempt(what: str, build: Any) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build()
    except ConfigError:
        raise
    except Exception as error:  # the library's own message is the most precise one
        raise ConfigError(f"{what} failed to build: {type(error).__name__}: {error}", hint="fix the arguments above.") from error
