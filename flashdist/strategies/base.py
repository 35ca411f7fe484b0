"""The interface every strategy route implements, and the default (DDP / single-device) route.

A route decides how the Task's optimizer spec becomes an optimizer under its strategy:
which class (DeepSpeed's CPU Adam when offloaded, torch's fused kernels, ...), over which
parameters (sharded DTensors under FSDP), and what it reports about that choice. The Task
only ever calls :meth:`StrategyRoute.build_optimizer`; no ``if strategy == ...`` elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flashdist.optim.build import build_optimizer
from flashdist.optim.param_groups import no_decay_names, param_groups_weight_decay
from flashdist.optim.specs import OptimizerSpec


@dataclass(frozen=True)
class OptimizerChoice:
    """What a route built, for the log line and ``summary.json``."""

    requested: str
    resolved_class: str
    reason: str


class StrategyRoute:
    """Default route: the optimizer the spec names, over the module's trainable parameters."""

    name = "ddp"

    def __init__(self, strategy: Any):
        self.strategy = strategy
        self.choice: OptimizerChoice | None = None

    def build_optimizer(
        self, module: nn.Module, spec: OptimizerSpec, learning_rate: float | None, weight_decay: float | None
    ) -> torch.optim.Optimizer:
        params = self.param_groups(module, weight_decay)
        target, reason = self.optimizer_class(spec, params)
        optimizer = build_optimizer(params, spec, learning_rate, target=target)
        self.choice = OptimizerChoice(spec.name, type(optimizer).__name__, reason)
        return optimizer

    def param_groups(self, module: nn.Module, weight_decay: float | None) -> list[Any]:
        if weight_decay is None:
            return [{"params": [p for p in module.parameters() if p.requires_grad]}]
        return param_groups_weight_decay(module.named_parameters(), weight_decay, no_decay_names(module))

    def optimizer_class(self, spec: OptimizerSpec, params: list[Any]) -> tuple[Any, str]:
        """The class to build instead of the registered one (None: keep it), and why."""
        return None, "as requested"
