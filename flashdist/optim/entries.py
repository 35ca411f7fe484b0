"""Typed registry entries for optimizers and LR schedulers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Interval = Literal["step", "epoch"]
# Optional packages (flashdist/optim/providers.py) and third-party entry points ("plugin").
OptimizerProvider = Literal[
    "torch", "transformers", "deepspeed", "recipe", "torch_optimizer", "schedulefree", "bitsandbytes", "torchao", "plugin"
]
SchedulerProvider = Literal["torch", "transformers", "deepspeed", "flashdist", "recipe", "plugin"]


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer the registry can build.

    ``target`` is a class, a lazy ``"module:attr"`` string (optional dependencies), or for a
    recipe a function ``fn(params, lr)``.
    """

    name: str
    target: type | str | Callable[..., Any]
    provider: OptimizerProvider
    # torch's fused / foreach kernels, used by the strategy routes when the device allows.
    supports_fused: bool = False
    supports_foreach: bool = False
    # Strategy routes ("deepspeed", "fsdp", "fsdp1") this optimizer cannot run under, and why:
    # refused with that reason before the optimizer is built.
    refused_routes: tuple[tuple[str, str], ...] = ()
    # "module:function" taking a torch.device, returning why the optimizer cannot run there
    # (None: it can), for packages whose backend decides (bitsandbytes).
    device_check: str | None = None

    def refusal_under(self, route: str) -> str | None:
        return dict(self.refused_routes).get(route)

    @property
    def is_recipe(self) -> bool:
        return self.provider == "recipe"


@dataclass(frozen=True)
class SchedulerEntry:
    """An LR scheduler the registry can build.

    ``total_steps_arg`` names the kwarg the harness fills with the planned optimizer steps
    (None: the schedule takes no total and is never handed one). ``duration_args`` are kwargs
    that accept durations (0.1, 500, "2ep", ...) resolved against the step plan.
    ``lr_defaults`` fills missing kwargs as a multiple of the optimizer's LR (e.g. OneCycleLR's
    ``max_lr``), with a warning, so a schedule never silently ignores ``learning_rate``.
    """

    name: str
    target: type | str | Callable[..., Any]
    provider: SchedulerProvider
    default_interval: Interval = "epoch"
    total_steps_arg: str | None = None
    duration_args: tuple[str, ...] = ()
    requires_monitor: bool = False
    lr_defaults: tuple[tuple[str, float], ...] = ()
    # kwargs that, when the user gives them, mean the total must not be filled in
    # (wsd_schedule's num_stable_steps, OneCycleLR's epochs/steps_per_epoch).
    total_steps_alternatives: tuple[str, ...] = ()
    # The one optimizer the schedule works with (transformers' AdafactorSchedule reads Adafactor's state).
    requires_optimizer: str | None = None

    @property
    def is_recipe(self) -> bool:
        return self.provider == "recipe"
