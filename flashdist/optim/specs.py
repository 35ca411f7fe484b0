"""Normalize every user form of ``optimizer=`` / ``lr_scheduler=`` into one frozen spec.

Accepted optimizer forms: a registered name, ``(name, kwargs)``, an optimizer class, or a
callable / ``functools.partial`` taking the parameters. Accepted scheduler forms: a name,
``(name, kwargs)``, ``(name, kwargs, lightning_config)``, a callable / partial taking the
optimizer, or a registered recipe name. Normalization happens once, at Task construction;
what the caller passed is deep-copied and never mutated.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_warn

from flashdist.errors import ConfigError, require_positive_int
from flashdist.optim.entries import OptimizerEntry, SchedulerEntry
from flashdist.optim.optimizers import OPTIMIZERS
from flashdist.optim.schedulers import LR_SCHEDULERS
from flashdist.registry import Registry, resolve_lazy

LIGHTNING_CONFIG_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"interval": "epoch", "frequency": 1, "monitor": "val_loss", "strict": True, "name": None}
)
# reduce_on_plateau: Lightning's key telling it to call step(metric) (a custom metric-driven scheduler needs it).
LIGHTNING_CONFIG_KEYS = frozenset(LIGHTNING_CONFIG_DEFAULTS) | {"scheduler", "reduce_on_plateau"}
INTERVALS = ("step", "epoch")
# Lightning Flash registered these with interval="step" (flash/core/optimizers/schedulers.py);
# flashdist keeps the spec's and Lightning's default, "epoch" (see the README's Decisions), and
# says so when a Flash user's spec names one without an interval.
FLASH_STEPPED = frozenset({"steplr", "multisteplr", "cosineannealinglr", "cosineannealingwarmrestarts"})
_FROZEN_EMPTY: Mapping[str, Any] = MappingProxyType({})
# A YAML scalar PyYAML (YAML 1.1) leaves as a string though a person meant a number: 1e-3, "3e-4".
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class OptimizerSpec:
    """A validated optimizer request. Exactly one of ``entry`` / ``factory`` is set."""

    entry: OptimizerEntry | None = None
    factory: Callable[..., Any] | None = None
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _FROZEN_EMPTY)

    @property
    def name(self) -> str:
        return self.entry.name if self.entry else _callable_name(self.factory)

    def describe(self) -> str:
        return _describe(self.name, self.kwargs)


@dataclass(frozen=True)
class SchedulerSpec:
    """A validated LR-scheduler request. Exactly one of ``entry`` / ``factory`` is set."""

    entry: SchedulerEntry | None = None
    factory: Callable[..., Any] | None = None
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _FROZEN_EMPTY)
    lightning_config: Mapping[str, Any] = field(default_factory=lambda: _FROZEN_EMPTY)

    @property
    def name(self) -> str:
        return self.entry.name if self.entry else _callable_name(self.factory)

    def describe(self) -> str:
        return _describe(self.name, self.kwargs)


def normalize_optimizer(spec: Any, registry: Registry[OptimizerEntry] = OPTIMIZERS) -> OptimizerSpec:
    """Turn any accepted ``optimizer=`` form into an :class:`OptimizerSpec`.

    Example:
        >>> normalize_optimizer(("Adam", {"amsgrad": True})).describe()
        'adam(amsgrad=True)'
    """
    if isinstance(spec, OptimizerSpec):
        return spec
    if isinstance(spec, str):
        return _checked_optimizer(registry.get(spec), {})
    if isinstance(spec, (tuple, list)):
        name, kwargs = _split_tuple(spec, "optimizer", max_len=2)
        return _checked_optimizer(registry.get(name), kwargs)
    if isinstance(spec, functools.partial) and not spec.args and _registered_class(spec.func, registry):
        # partial(Adam, amsgrad=True) is (name, kwargs): strategy routes may swap the class.
        return _checked_optimizer(_registered_class(spec.func, registry), dict(spec.keywords))
    if inspect.isclass(spec) and _registered_class(spec, registry):
        return _checked_optimizer(_registered_class(spec, registry), {})
    if callable(spec):
        return OptimizerSpec(factory=spec)
    raise ConfigError(
        f"optimizer={spec!r} has type {type(spec).__name__}.",
        accepted="a name ('adamw'), (name, kwargs), an optimizer class, or a callable taking the parameters",
        hint="see Task.available_optimizers().",
    )


def normalize_scheduler(
    spec: Any, registry: Registry[SchedulerEntry] = LR_SCHEDULERS, *, for_trainer: bool = True
) -> SchedulerSpec | None:
    """Turn any accepted ``lr_scheduler=`` form into a :class:`SchedulerSpec` (None stays None).

    ``for_trainer=False`` (a scheduler built on its own, outside Lightning) does not ask for the
    ``monitor`` of a metric-driven schedule, nor warn about Lightning intervals.

    Example:
        >>> normalize_scheduler(("StepLR", {"step_size": 10})).lightning_config["interval"]
        'epoch'
    """
    if spec is None or isinstance(spec, SchedulerSpec):
        return spec
    if isinstance(spec, str):
        return _checked_scheduler(registry.get(spec), {}, {}, for_trainer)
    if isinstance(spec, (tuple, list)):
        name, kwargs, lightning_config = _split_tuple(spec, "lr_scheduler", max_len=3)
        return _checked_scheduler(registry.get(name), kwargs, lightning_config, for_trainer)
    if isinstance(spec, functools.partial) and not spec.args and _registered_scheduler(spec.func, registry):
        # partial(CyclicLR, step_size_up=1500) is (name, kwargs): LR-relative defaults get filled.
        return _checked_scheduler(_registered_scheduler(spec.func, registry), _copy(spec.keywords), {}, for_trainer)
    if callable(spec):
        return SchedulerSpec(factory=spec, lightning_config=_lightning_config({}, "epoch", requires_monitor=False))
    raise ConfigError(
        f"lr_scheduler={spec!r} has type {type(spec).__name__}.",
        accepted="a name, (name, kwargs), (name, kwargs, lightning_config), a callable taking the optimizer, or a recipe name",
        hint="see Task.available_lr_schedulers().",
    )


def _split_tuple(spec: tuple | list, what: str, max_len: int) -> tuple:
    if not 1 <= len(spec) <= max_len or not isinstance(spec[0], str):
        shape = "(name, kwargs)" if max_len == 2 else "(name, kwargs) or (name, kwargs, lightning_config)"
        raise ConfigError(f"{what}={spec!r} is not {shape}.", hint="the first item is the registered name, a string.")
    parts = list(spec) + [{}] * (max_len - len(spec))
    for index, part in enumerate(parts[1:], start=1):
        if part is None:
            parts[index] = {}
        elif not isinstance(part, Mapping):
            raise ConfigError(f"{what}={spec!r}: item {index} must be a dict, got {type(part).__name__}.")
    return (parts[0], *(_copy(p) for p in parts[1:]))


def _copy(mapping: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return copy.deepcopy(dict(mapping))
    except Exception:  # uncopyable values (locks, generators): a shallow copy still protects the dict
        return dict(mapping)


def _registered_class(cls: Any, registry: Registry[OptimizerEntry]) -> OptimizerEntry | None:
    if not inspect.isclass(cls) or cls.__name__ not in registry:
        return None
    entry = registry.get(cls.__name__)
    return entry if entry.target is cls else None


def _registered_scheduler(cls: Any, registry: Registry[SchedulerEntry]) -> SchedulerEntry | None:
    return _registered_class(cls, registry)  # same rule: registered under its class name, same class


def _checked_optimizer(entry: OptimizerEntry, kwargs: dict[str, Any]) -> OptimizerSpec:
    if isinstance(kwargs.get("lr"), (str, int, float)):  # not a tensor lr (capturable optimizers)
        check_learning_rate(kwargs["lr"], what="lr", where=f" in optimizer {entry.name!r}'s kwargs")
    check_numbers(kwargs, f"optimizer {entry.name!r}", allow_inf=False)
    if not entry.is_recipe:
        _check_kwargs(entry.name, "optimizer", resolve_lazy(entry.target), kwargs, skip=set(), filled=set(), first_is_params=True)
    return OptimizerSpec(entry=entry, kwargs=MappingProxyType(kwargs))


def _checked_scheduler(
    entry: SchedulerEntry, kwargs: dict[str, Any], lightning_config: dict[str, Any], for_trainer: bool = True
) -> SchedulerSpec:
    if entry.is_recipe and kwargs:
        raise ConfigError(f"lr_scheduler recipe {entry.name!r} takes no kwargs, got {sorted(kwargs)}.",
                          hint="a recipe is fn(optimizer); put its settings inside the recipe.")
    # inf stays allowed here: ReduceLROnPlateau(patience=math.inf) and the like are meaningful.
    check_numbers(kwargs, f"lr_scheduler {entry.name!r}", allow_inf=True)
    if not entry.is_recipe:
        filled = {entry.total_steps_arg} | {name for name, _ in entry.lr_defaults}
        _check_kwargs(entry.name, "lr_scheduler", resolve_lazy(entry.target), kwargs, skip={"optimizer"}, filled=filled)
    config = _lightning_config(lightning_config, entry.default_interval, entry.requires_monitor, entry.name, demand_monitor=for_trainer)
    if for_trainer and entry.name.lower() in FLASH_STEPPED and "interval" not in lightning_config:
        rank_zero_warn(  # each rank builds the Task: say it once
            f"lr_scheduler {entry.name!r} steps once per epoch (interval='epoch', Lightning's default); Lightning Flash "
            f"stepped it once per optimizer step. Pass ({entry.name.lower()!r}, {{...}}, {{'interval': 'step'}}) to step it per "
            "batch, or {'interval': 'epoch'} to keep this and silence the warning.",
            category=UserWarning,
            stacklevel=5,
        )
    return SchedulerSpec(entry=entry, kwargs=MappingProxyType(kwargs), lightning_config=config)


def check_learning_rate(value: Any, *, what: str = "learning_rate", where: str = "") -> float | None:
    """A learning rate is None (the optimizer's default) or a finite number >= 0; refuse anything else.

    PyYAML reads ``1e-3`` (no dot) as the string ``"1e-3"``; torch then fails comparing it, so the
    string is refused here, naming the value and the fix.

    Example:
        >>> check_learning_rate(1e-3)
        0.001
    """
    if value is None:
        return None
    hint = "pass a float such as learning_rate=1e-3, or leave it out to use the optimizer's default lr."
    if isinstance(value, str):
        raise ConfigError(
            f"{what}={value!r}{where} is a string, not a number.",
            hint="in YAML write 1.0e-3 (PyYAML reads 1e-3 without a dot as a string); in Python pass the float 1e-3.",
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what}={value!r}{where} has type {type(value).__name__}, not a number.", hint=hint)
    if not math.isfinite(value):
        raise ConfigError(f"{what}={value!r}{where} is not finite: every update would be {value}.", accepted="a finite number >= 0", hint=hint)
    if value < 0:
        raise ConfigError(f"{what}={value!r}{where} is negative.", accepted="a finite number >= 0", hint=hint)
    return value


def check_numbers(kwargs: Mapping[str, Any], what: str, *, allow_inf: bool) -> None:
    """Refuse NaN (and, unless ``allow_inf``, infinite) numbers in kwargs, tuples such as ``betas`` included."""
    for key, value in kwargs.items():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, float) and (math.isnan(item) or (math.isinf(item) and not allow_inf)):
                raise ConfigError(f"{what} got {key}={value!r}, which is not a finite number.", hint=f"give {key} a finite value.")


def _check_kwargs(
    name: str, what: str, target: Any, kwargs: dict[str, Any], skip: set[str], filled: set[str | None], first_is_params: bool = False
) -> None:
    """Compare kwargs with the constructor's signature: unknown names and missing required ones.

    Optimizers take their parameters first, whatever that argument is called (DeepSpeed's
    ``model_params``); schedulers take ``optimizer`` by keyword.
    """
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature: the dry build checks instead
        return
    if first_is_params:
        skip = skip | {next(iter(params), "")}
    takes_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    known = [p for p in params if p not in skip and params[p].kind not in (params[p].VAR_POSITIONAL, params[p].VAR_KEYWORD)]
    _check_number_strings(name, what, params, kwargs)
    unknown = [k for k in kwargs if k not in params or k in skip]
    if unknown and not takes_var_kwargs:
        bad = unknown[0]
        close = difflib.get_close_matches(bad, known, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"{name} takes: {', '.join(known)}."
        raise ConfigError(f"{what} {name!r} got an unknown argument {bad!r}.", accepted=known, hint=hint)
    missing = [
        p
        for p, param in params.items()
        if param.default is param.empty
        and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
        and p not in skip
        and p not in kwargs
        and p not in filled
    ]
    if missing:
        raise ConfigError(
            f"{what} {name!r} is missing required argument(s) {missing}.",
            hint=f"pass them as ({name!r}, {{{', '.join(f'{m!r}: ...' for m in missing)}}}).",
        )


def _check_number_strings(name: str, what: str, params: Mapping[str, inspect.Parameter], kwargs: Mapping[str, Any]) -> None:
    """Refuse ``eps: "1e-8"`` where the constructor's default is a number: PyYAML (YAML 1.1) reads
    ``1e-8`` without a dot as a string, and torch would fail mid-build comparing it.

    Strings stay legal where the argument takes them (``num_warmup_steps: "2ep"``, ``mode: max``).
    """
    for key, value in kwargs.items():
        if not isinstance(value, str) or not _NUMBER.fullmatch(value.strip()) or key not in params:
            continue
        default = params[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            number = float(value)
            written = repr(int(number)) if number.is_integer() and isinstance(default, int) else repr(number)
            raise ConfigError(
                f"{what} {name!r} got {key}={value!r}: a string, but {name} takes a number there (default {default!r}).",
                hint=f"write it unquoted, with a dot before any exponent: {key}: {written}.",
            )


def _lightning_config(
    given: dict[str, Any], default_interval: str, requires_monitor: bool, name: str = "", demand_monitor: bool = True
) -> Mapping[str, Any]:
    if "opt_idx" in given:
        given = _without_opt_idx(given, name)
    unknown = set(given) - LIGHTNING_CONFIG_KEYS
    if unknown:
        raise ConfigError(
            f"lr_scheduler lightning config has unknown key(s) {sorted(unknown)}.",
            accepted=sorted(LIGHTNING_CONFIG_KEYS - {"scheduler"}),
            hint="this is the Lightning scheduler config: interval, frequency, monitor, strict, name.",
        )
    if "scheduler" in given:
        warnings.warn(
            "the lightning config's 'scheduler' key is overridden by the scheduler flashdist builds from the spec.",
            UserWarning,
            stacklevel=4,
        )
        given = {k: v for k, v in given.items() if k != "scheduler"}
    # Only a Trainer has metrics to monitor: a scheduler built on its own is stepped by its caller.
    if requires_monitor and demand_monitor and not given.get("monitor"):
        raise ConfigError(
            f"lr_scheduler {name!r} steps on a metric, but no 'monitor' was given.",
            hint=f"pass it in the lightning config: ({name!r}, {{...}}, {{'monitor': 'val_accuracy'}}).",
        )
    config = {**LIGHTNING_CONFIG_DEFAULTS, "interval": default_interval, **given}
    if config["interval"] not in INTERVALS:
        raise ConfigError(f"lr_scheduler interval={config['interval']!r} is not valid.", accepted=INTERVALS)
    frequency = config["frequency"]
    require_positive_int(frequency, f"lr_scheduler frequency={frequency!r}")
    if not isinstance(config["strict"], bool):
        raise ConfigError(f"lr_scheduler strict={config['strict']!r} must be True or False.")
    if not isinstance(config.get("reduce_on_plateau", False), bool):
        raise ConfigError(f"lr_scheduler reduce_on_plateau={config['reduce_on_plateau']!r} must be True or False.")
    if requires_monitor:
        config["reduce_on_plateau"] = True  # tells Lightning to pass the monitored value to step()
    return MappingProxyType(config)


def _without_opt_idx(given: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Lightning 1.x's ``opt_idx`` (which optimizer a scheduler belongs to), as Flash's recipes
    returned it: with one optimizer it says nothing, so it is dropped with a deprecation warning,
    as Lightning 2 ignores it; an index of another optimizer is refused. A copy: the user's
    dict is left as it was."""
    if given["opt_idx"] not in (None, 0):
        raise ConfigError(
            f"lr_scheduler {name!r}: opt_idx={given['opt_idx']!r} names an optimizer other than the Task's one.",
            hint="a flashdist Task has one optimizer: drop opt_idx (Lightning 2 no longer reads it).",
        )
    warnings.warn(
        f"lr_scheduler {name!r}: the scheduler config's 'opt_idx' is a Lightning 1.x key that Lightning 2 no longer reads; "
        "it is dropped (a Task has one optimizer). Remove it from the returned dict.",
        FutureWarning,
        stacklevel=5,
    )
    return {k: v for k, v in given.items() if k != "opt_idx"}


def merge_lightning_config(spec: SchedulerSpec, returned: Mapping[str, Any]) -> Mapping[str, Any]:
    """A recipe's returned Lightning scheduler config (``{"scheduler": s, "interval": "step"}``, as
    Flash's recipes return) over the spec's: validated like one given in the spec.

    Example:
        >>> spec = normalize_scheduler(lambda optimizer: None)
        >>> merge_lightning_config(spec, {"scheduler": None, "interval": "step"})["interval"]
        'step'
    """
    given = {k: v for k, v in returned.items() if k != "scheduler"}
    merged = {**{k: v for k, v in spec.lightning_config.items() if k != "reduce_on_plateau"}, **given}
    if spec.lightning_config.get("reduce_on_plateau") and "reduce_on_plateau" not in given:
        merged["reduce_on_plateau"] = True
    return _lightning_config(merged, merged["interval"], requires_monitor=False, name=spec.name)


def _callable_name(factory: Any) -> str:
    if isinstance(factory, functools.partial):
        return _callable_name(factory.func)
    return getattr(factory, "__name__", type(factory).__name__)


def _describe(name: str, kwargs: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{name.lower()}({args})"
