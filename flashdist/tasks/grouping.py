"""``param_groups=`` / ``layer_decay=`` on a Task: validated against its parameters at construction."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from flashdist.optim.param_groups import Grouping, check_rules_match, layer_map, normalize_grouping


def grouping_for(task: nn.Module, param_groups: Any, layer_decay: float | None) -> Grouping:
    """The Task's grouping, checked: every regex matches a parameter, layer decay finds blocks (mapping logged).

    Names are the Task's own (``model.encoder.layer.0.attention...``), as the optimizer sees them.

    Example:
        >>> grouping_for(task, [{"match": r"classifier", "lr_scale": 10.0}], None)  # doctest: +SKIP
    """
    grouping = normalize_grouping(param_groups, layer_decay)
    if not grouping.active or getattr(task, "model", None) is None:
        return grouping
    named = [(name, p) for name, p in task.named_parameters() if p.requires_grad]
    check_rules_match(grouping, [name for name, _ in named])
    if grouping.layer_decay is not None:
        layers = layer_map(named, task)
        scales = ", ".join(f"{layer}: ×{grouping.layer_decay ** (layers.num_layers - 1 - layer):.4g}" for layer in range(layers.num_layers))
        rank_zero_info(f"flashdist layer_decay={grouping.layer_decay}: {layers.describe()}; LR scales {scales}")
    return grouping
