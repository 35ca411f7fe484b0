"""Parameter grouping for weight decay, as a pure function (timm's ``param_groups_weight_decay``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# Module types whose parameters are normalization scales/shifts: never decayed.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that must not be weight-decayed: biases, norm weights, 1-D tensors."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, NORM_TYPES) or param_name.endswith("bias") or param.ndim <= 1:
                names.add(full)
    return names


def param_groups_weight_decay(
    named_params: Iterable[tuple[str, torch.Tensor]], weight_decay: float, no_decay: set[str]
) -> list[dict]:
    """Two groups: decayed, and not (names in ``no_decay``). Frozen parameters are left out.

    Works on any (name, tensor) pairs, so the FSDP route can group by name before sharding
    and map the same names onto the sharded DTensors after.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> groups = param_groups_weight_decay(model.named_parameters(), 0.01, no_decay_names(model))
        >>> [(g["weight_decay"], len(g["params"])) for g in groups]
        [(0.01, 1), (0.0, 3)]
    """
    decay, keep = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        (keep if name in no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
