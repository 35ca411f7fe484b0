"""Builders: a spec (any accepted form) → an optimizer, or a scheduler and its Lightning config.

Public, so the registries serve outside a Task too. Scheduler kwargs are resolved here, once:
durations against the step plan, the total filled in only for schedules that take one, and
LR-relative defaults from the optimizer.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_warn

from flashdist.errors import ConfigError, require_positive_int
from flashdist.optim.compiled import tensor_lr_kwargs
from flashdist.optim.entries import SchedulerEntry
from flashdist.optim.schedulers import NESTED_SCHEDULERS
from flashdist.optim.specs import (
    OptimizerSpec,
    SchedulerSpec,
    check_learning_rate,
    merge_lightning_config,
    normalize_optimizer,
    normalize_scheduler,
)
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
    # Recipes and callables are called as Flash called them: fn(params, **kwargs), with lr= only
    # when a learning rate was given, so a recipe's own default lr holds otherwise.
    factory = target if target is not None else (resolve_lazy(spec.entry.target) if spec.entry else spec.factory)
    return factory(params, **kwargs)


def optimizer_kwargs(spec: OptimizerSpec, learning_rate: float | None) -> dict[str, Any]:
    learning_rate = check_learning_rate(learning_rate)
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
    custom_step: bool = False,
    lr_as_tensor: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Build the scheduler ``spec`` describes and return it with its Lightning config.

    ``plan`` (from the Trainer) resolves every duration unit; ``num_training_steps`` alone
    resolves step counts and fractions. ``custom_step``: the Task overrides
    ``lr_scheduler_step``, which decides how ``step()`` is called (see :func:`check_scheduler_api`).
    ``lr_as_tensor``: the optimizer's LRs become 0-dim tensors the schedule fills in place, as a
    Task builds them for a compiled or capturable step (:func:`flashdist.optim.compiled.tensor_lr_kwargs`).

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched, config = build_lr_scheduler(opt, ("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}), 100)
        >>> config["interval"], sched.get_last_lr()[0]
        ('step', 0.0)
    """
    spec = normalize_scheduler(spec, for_trainer=False)
    if spec is None:
        raise ConfigError("lr_scheduler=None cannot be built.", hint="pass a scheduler spec.")
    if plan is None and num_training_steps is not None:
        plan = _plan_of_total(num_training_steps)
    elif plan is not None and num_training_steps is not None and num_training_steps != plan.planned_total_steps:
        raise ConfigError(f"num_training_steps={num_training_steps} disagrees with the plan's {plan.planned_total_steps}.")
    kwargs = resolve_scheduler_kwargs(spec, optimizer, plan) if spec.entry is not None and not spec.entry.is_recipe else None
    if kwargs is not None and num_training_steps is not None:
        problem = schedule_length_conflict(spec, kwargs, num_training_steps)
        if problem:
            raise ConfigError(problem, hint="leave the total out: it is filled from num_training_steps.")
    if lr_as_tensor:
        target = spec.entry.target if spec.entry is not None and not spec.entry.is_recipe else None
        kwargs = tensor_lr_kwargs(optimizer, target, kwargs, True, spec.name)
    return instantiate_scheduler(optimizer, spec, kwargs, custom_step=custom_step)


def instantiate_scheduler(
    optimizer: torch.optim.Optimizer, spec: SchedulerSpec, kwargs: dict[str, Any] | None, *, custom_step: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Construct the scheduler from kwargs already resolved by :func:`resolve_scheduler_kwargs`.

    A recipe or callable may return a scheduler or a Lightning scheduler config
    (``{"scheduler": s, "interval": "step", ...}``); either way the result is checked against
    the API Lightning will call (:func:`check_scheduler_api`).
    """
    if spec.entry is None:
        built = spec.factory(optimizer)
    elif spec.entry.is_recipe:
        built = spec.entry.target(optimizer)
    else:
        built = resolve_lazy(spec.entry.target)(optimizer=optimizer, **(kwargs or {}))
    config = spec.lightning_config
    if isinstance(built, Mapping):
        if "scheduler" not in built:
            raise ConfigError(
                f"lr_scheduler {spec.name!r} returned a dict without a 'scheduler' key: {sorted(built)}.",
                hint="return the scheduler, or a Lightning scheduler config {'scheduler': scheduler, 'interval': 'step'}.",
            )
        config, built = merge_lightning_config(spec, built), built["scheduler"]
    check_scheduler_api(built, config, f"lr_scheduler {spec.name!r}", custom_step=custom_step)
    return built, {**config, "scheduler": built}


class SchedulerStepCallError(ConfigError):
    """A scheduler whose ``step()`` Lightning could not call as it calls it, and no ``lr_scheduler_step`` override to call it.

    A Task defers this one refusal from its construction to its fit: Lightning's users (and its
    tests) assign ``model.lr_scheduler_step = MethodType(fn, model)`` after building the module.
    """


def check_scheduler_api(scheduler: Any, config: Mapping[str, Any], what: str = "lr_scheduler", *, custom_step: bool = False) -> None:
    """Refuse what Lightning could not step: Lightning's own check, which the Task's
    ``lr_scheduler_step`` override (for transformers' metric-driven GreedyLR) would skip.

    A scheduler needs ``step()``, ``state_dict()`` and ``load_state_dict()``. Lightning calls
    ``step()`` with no argument, or ``step(metric)`` when the config says ``reduce_on_plateau``;
    unless the user's Task overrides ``lr_scheduler_step`` (``custom_step``): then their
    override calls ``step()`` its own way (``step(epoch)``, ``step(foobar)``), and Lightning
    skips its check, so the signature is not checked here either.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> check_scheduler_api(torch.optim.lr_scheduler.StepLR(opt, 1), {"reduce_on_plateau": False})
    """
    missing = [name for name in ("step", "state_dict", "load_state_dict") if not callable(getattr(scheduler, name, None))]
    hint = "return a torch.optim.lr_scheduler.LRScheduler, or a Lightning scheduler config {'scheduler': scheduler, 'interval': 'step'}."
    if isinstance(scheduler, torch.optim.Optimizer):  # has all three methods, and is the usual slip
        raise ConfigError(f"{what} gave a {type(scheduler).__name__}, which is not an LR scheduler but the optimizer.", hint=hint)
    if missing:
        raise ConfigError(
            f"{what} gave a {type(scheduler).__name__}, which is not an LR scheduler (it lacks {', '.join(missing)}).",
            hint=hint,
        )
    if custom_step or isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        return
    try:
        params = list(inspect.signature(scheduler.step).parameters.values())
    except (TypeError, ValueError):
        return  # a builtin: nothing to read
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    takes_one = bool(positional) or any(p.kind is p.VAR_POSITIONAL for p in params)
    if config.get("reduce_on_plateau"):
        if not takes_one or len(required) > 1:
            raise SchedulerStepCallError(
                f"{what}: {type(scheduler).__name__}.step() cannot take the monitored metric (reduce_on_plateau=True), "
                "but Lightning calls step(metric).",
                hint="give step() one argument for the metric, or drop reduce_on_plateau.",
            )
    elif required:
        raise SchedulerStepCallError(
            f"{what}: {type(scheduler).__name__}.step() needs {required}, but Lightning calls step() with no argument.",
            hint="if it steps on a metric, say so in the Lightning config: {'reduce_on_plateau': True, 'monitor': 'val_loss'} "
            "(a recipe may return {'scheduler': s, 'reduce_on_plateau': True, 'monitor': 'val_loss'}); otherwise give the argument a default.",
        )


def schedule_length_conflict(spec: SchedulerSpec, kwargs: Mapping[str, Any], total_steps: int) -> str | None:
    """A user-given schedule length that differs from the planned total, described; None when it lands.

    The schedule's length is its total-steps kwarg when the user gave it, or what its
    alternatives add up to (wsd's warmup + stable + decay, OneCycleLR's epochs × steps_per_epoch).

    Example:
        >>> spec = normalize_scheduler(("linear_schedule_with_warmup", {"num_warmup_steps": 2, "num_training_steps": 1000}))
        >>> schedule_length_conflict(spec, spec.kwargs, 40)[:60]
        "lr_scheduler 'linear_schedule_with_warmup' was given num_tra"
    """
    entry = spec.entry
    if entry is None or entry.is_recipe or not entry.total_steps_arg:
        return None
    name = entry.name.lower()
    given: str | None = None
    length: int | None = None
    if entry.total_steps_arg in spec.kwargs:
        given, length = f"{entry.total_steps_arg}={kwargs[entry.total_steps_arg]}", kwargs[entry.total_steps_arg]
    elif name.endswith("wsd_schedule") and "num_stable_steps" in spec.kwargs:
        parts = {k: kwargs.get(k, 0) for k in ("num_warmup_steps", "num_stable_steps", "num_decay_steps")}
        given, length = " + ".join(f"{k}={v}" for k, v in parts.items()), sum(parts.values())
    elif name == "onecyclelr" and {"epochs", "steps_per_epoch"} <= set(spec.kwargs):
        given = f"epochs={kwargs['epochs']} × steps_per_epoch={kwargs['steps_per_epoch']}"
        length = kwargs["epochs"] * kwargs["steps_per_epoch"]
    if given is None or length == total_steps:
        return None
    return (
        f"lr_scheduler {entry.name!r} was given {given} (a schedule of {length} steps), but this fit plans {total_steps} "
        "optimizer steps, so the schedule would not land."
    )


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
    group_lrs = [group["lr"] for group in optimizer.param_groups]
    lr: Any = group_lrs[0] if len(set(group_lrs)) == 1 else group_lrs
    # Per-group LRs (param_groups= lr scales) become per-group lists, which these schedules accept.
    filled = {arg: factor * lr if not isinstance(lr, list) else [factor * v for v in lr] for arg, factor in entry.lr_defaults if arg not in kwargs}
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
                action = f"using {arg}={total}" if kwargs[arg] > total else "kept"
                rank_zero_warn(f"{message} fast_dev_run={fast_dev_run}: {action} for this smoke run only.", category=UserWarning, stacklevel=5)
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
    require_positive_int(total_steps, f"num_training_steps={total_steps}")
    return StepPlan(
        data_parallel_size=1, accumulate_grad_batches=1, max_epochs=None, max_steps=total_steps,
        micro_batches_per_epoch_per_rank=None, optimizer_steps_per_epoch=(), planned_total_steps=total_steps, global_batch_size=None,
    )


def dry_run(
    optimizer_spec: OptimizerSpec, scheduler_spec: SchedulerSpec | None, learning_rate: float | None, *, custom_step: bool = False
) -> None:
    """Build both on a dummy parameter, turning any failure into a ConfigError now, not at fit.

    ``custom_step``: the Task overrides ``lr_scheduler_step`` (see :func:`check_scheduler_api`)."""
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
        is_callable = optimizer_spec.entry is None or optimizer_spec.entry.is_recipe
        hint = (
            "an optimizer recipe or callable is called fn(params), or fn(params, lr=...) when the Task has learning_rate=; "
            "give it the arguments it needs (a default lr, or learning_rate= on the Task)."
            if is_callable
            else None
        )
        optimizer = _attempt(f"optimizer {optimizer_spec.describe()}", lambda: build_optimizer(dummy, optimizer_spec, learning_rate), hint)
    if scheduler_spec is not None:
        _attempt(
            f"lr_scheduler {scheduler_spec.describe()}",
            lambda: build_lr_scheduler(optimizer, scheduler_spec, plan=_placeholder_plan(scheduler_spec), custom_step=custom_step),
        )


def _placeholder_plan(spec: SchedulerSpec) -> StepPlan:
    """A plan long enough for any step count the spec names, so the dry build checks kwargs only."""
    longest = 0
    for value in spec.kwargs.values():
        if isinstance(value, int) and not isinstance(value, bool):
            longest = max(longest, value)
    epochs, steps_per_epoch = 1000, math.ceil(max(1000, 10 * longest) / 1000)  # epochs that add up to the total
    # One "token" step of 10**15 tokens: a token duration resolves to 1 step here; the real plan checks it.
    return StepPlan(
        data_parallel_size=1, accumulate_grad_batches=1, max_epochs=epochs, max_steps=-1,
        micro_batches_per_epoch_per_rank=steps_per_epoch, optimizer_steps_per_epoch=(steps_per_epoch,) * epochs,
        planned_total_steps=steps_per_epoch * epochs, global_batch_size=1, tokens_per_sample=10**15,
    )


def _attempt(what: str, build: Any, hint: str | None = None) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build()
    except ConfigError:
        raise
    except Exception as error:  # the library's own message is the most precise one
        raise ConfigError(f"{what} failed to build: {type(error).__name__}: {error}", hint=hint or "fix the arguments above.") from error
