"""The interface every strategy route implements, and the default (DDP / single-device) route.

A route decides how the Task's optimizer spec becomes an optimizer under its strategy:
which class (DeepSpeed's CPU Adam when offloaded, torch's fused kernels, ...), over which
parameters (sharded DTensors under FSDP), and what it reports about that choice. The Task
only ever calls :meth:`StrategyRoute.build_optimizer`; no ``if strategy == ...`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flashdist.errors import ConfigError
from flashdist.optim.build import build_optimizer
from flashdist.optim.providers import device_problem
from flashdist.optim.param_groups import (
    Grouping,
    apply_lr_scales,
    layer_map,
    no_decay_names,
    param_groups_declarative,
    param_groups_weight_decay,
)
from flashdist.optim.specs import OptimizerSpec
from flashdist.plan import StepPlan
from flashdist.strategies.grad_norm import NormBatch, PendingNorm, total_grad_norm


@dataclass(frozen=True)
class OptimizerChoice:
    """What a route built, for the log line and ``summary.json``."""

    requested: str
    resolved_class: str
    reason: str


class StrategyRoute:
    """Default route: the optimizer the spec names, over the module's trainable parameters."""

    name = "ddp"

    def __init__(self, strategy: Any, plan: Callable[[], StepPlan] | None = None):
        self.strategy = strategy
        self.choice: OptimizerChoice | None = None
        self._plan = plan
        self._grad_norm: PendingNorm | None = None
        self._norms = NormBatch()  # read on the host in batches, never at the update (grad_norm.py)
        self._trainable: tuple[nn.Module, list[torch.Tensor]] | None = None

    def plan(self) -> StepPlan | None:
        """The fit's step plan, as the Trainer handed it (None: no flashdist Trainer runs this strategy)."""
        return self._plan() if self._plan is not None else None


    def build_optimizer(
        self, module: nn.Module, spec: OptimizerSpec, learning_rate: float | None, weight_decay: float | None,
        grouping: Grouping | None = None,
    ) -> torch.optim.Optimizer:
        check_optimizer_runs_here(spec, self.name, _first_device(module))
        params = self.param_groups(module, weight_decay, grouping)
        target, reason = self.optimizer_class(spec, params)
        optimizer = build_optimizer(params, spec, learning_rate, target=target)
        apply_lr_scales(optimizer.param_groups)  # before the scheduler takes each group's base LR
        self.choice = OptimizerChoice(spec.name, type(optimizer).__name__, reason)
        # Said once, in the plan's "optimizer" row (runtime/report.py) and summary.json: not logged here too.
        return optimizer

    def param_groups(self, module: nn.Module, weight_decay: float | None, grouping: Grouping | None = None) -> list[Any]:
        return group_parameters(list(module.named_parameters()), module, weight_decay, no_decay_names(module), grouping)

    def optimizer_class(self, spec: OptimizerSpec, params: list[Any]) -> tuple[Any, str]:
        """The class to build instead of the registered one (None: keep it), and why."""
        return None, "as requested"

    def record_grad_norm(self, module: nn.Module) -> None:
        """Called before clipping (Lightning's ``on_before_optimizer_step``), with the gradients reduced."""
        norm = total_grad_norm(self.trainable_parameters(module))
        self._grad_norm = None if norm is None else self._norms.add(norm)

    def trainable_parameters(self, module: nn.Module) -> list[torch.Tensor]:
        if self._trainable is None or self._trainable[0] is not module:  # the parameter list, once per fit
            self._trainable = (module, [p for p in module.parameters() if p.requires_grad])
        return self._trainable[1]

    def grad_norm(self) -> float | None:
        """The pre-clip total gradient norm of the current (or last) optimizer step.

        Every rank calls it together: under FSDP2 it may finish a pending reduction (a collective).
        """
        self.finish_grad_norms()
        return None if self._grad_norm is None else self._grad_norm.value

    def grad_norm_entry(self) -> PendingNorm | None:
        """This update's norm for ``lr.csv``, without waiting: a :class:`PendingNorm` while its reduction is pending."""
        return self._grad_norm

    def finish_grad_norms(self) -> None:
        """Complete every pending norm: one host read (every rank together: under FSDP2 also a collective)."""
        self._norms.reduce()

    def register_step_counter(self, optimizer: Any, count: StepCounter) -> Any:
        """Call ``count(torch_optimizer, args, kwargs)`` once per real parameter update; returns a handle with ``remove()``.

        The default hooks the innermost torch optimizer's ``step`` (under Lightning's
        wrapper), after it ran: Lightning runs the closure (forward, backward,
        ``on_before_optimizer_step``, clipping) inside ``optimizer.step(closure)``, so only a
        post-hook sees this update's gradient norm. Routes whose wrappers step the torch
        optimizer several times per update (DeepSpeed's ZeRO: once per param group or
        sub-group) override this.
        """
        return unwrap_optimizer(optimizer).register_step_post_hook(count)

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor] | None:
        """The module's whole state dict on CPU on global rank 0 (None elsewhere); every rank must call it.

        Whole parameters live on every rank here (DDP, ZeRO-1/2); sharding routes gather first.
        """
        if self.strategy.global_rank != 0:
            return None
        return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}


class RouteAware:
    """A flashdist strategy that consults its fit's route (given by :func:`flashdist.strategies.route_for`)."""

    __slots__ = ()  # no state: listed after the Lightning base, a strategy object can still be adopted
    route: StrategyRoute | None = None


StepCounter = Callable[[torch.optim.Optimizer, Any, Any], None]


def check_optimizer_runs_here(spec: OptimizerSpec, route: str, device: torch.device) -> None:
    """Refuse, before building, an optimizer its provider says cannot run under ``route`` or on ``device``.

    Example:
        >>> from flashdist.optim.specs import normalize_optimizer
        >>> check_optimizer_runs_here(normalize_optimizer("adamw"), "deepspeed", torch.device("cpu"))
    """
    entry = spec.entry
    if entry is None:
        return
    reason = entry.refusal_under(route)
    if reason is None:
        reason = device_problem(entry, device)
        where = f"on {device.type}"
    else:
        where = f"under the {route} strategy"
    if reason is not None:
        raise ConfigError(f"optimizer {spec.name!r} ({entry.provider}) cannot run {where}: {reason}.",
                          hint="pick another optimizer (Task.available_optimizers()) or another strategy/device.")


def _first_device(module: nn.Module) -> torch.device:
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


def group_parameters(
    named: list[tuple[str, torch.Tensor]], module: nn.Module, weight_decay: float | None, no_decay: set[str], grouping: Grouping | None
) -> list[Any]:
    """The optimizer's groups by parameter name: declarative rules / layer decay, else the weight-decay split.

    Every route calls this with the names it sees (FSDP2: the sharded DTensors', which keep
    the names they had before sharding), so the groups are the same on every strategy.
    """
    if grouping is not None and grouping.active:
        layers = layer_map(named, module) if grouping.layer_decay is not None else None
        return param_groups_declarative(named, weight_decay, no_decay, grouping, layers)
    if weight_decay is None:
        return [{"params": [p for _, p in named if p.requires_grad]}]
    return param_groups_weight_decay(named, weight_decay, no_decay)


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """LightningOptimizer / DeepSpeed's ZeRO wrappers down to the torch optimizer that updates."""
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None)  # LightningOptimizer.optimizer and ZeRO's wrapper's: both public
        if inner is None or inner is optimizer or not hasattr(inner, "param_groups"):
            break
        optimizer = inner
    return optimizer
