"""Parameter grouping as pure functions: weight decay (timm's ``param_groups_weight_decay``),
declarative regex rules and layer-wise LR decay (timm's ``param_groups_layer_decay``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flashdist.errors import ConfigError

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


# ---- declarative groups: regex rules and layer-wise LR decay ----------------------------------
GROUP_RULE_KEYS = ("match", "lr_scale", "weight_decay")


@dataclass(frozen=True)
class GroupRule:
    """One ``param_groups=`` entry: parameters whose name matches ``match`` (``re.search``)."""

    match: str
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None: the Task's rule (weight_decay on weights, 0 on biases/norms)


@dataclass(frozen=True)
class Grouping:
    """The Task's ``param_groups=`` rules (first match wins) and ``layer_decay=``, validated."""

    rules: tuple[GroupRule, ...] = ()
    layer_decay: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.layer_decay is not None


def normalize_grouping(param_groups: Sequence[Mapping[str, Any]] | None, layer_decay: float | None) -> Grouping:
    """Check ``param_groups=`` / ``layer_decay=`` (keys, types, ranges, regexes) and freeze them.

    Example:
        >>> normalize_grouping([{"match": r"^head\\.", "lr_scale": 10}], None).rules[0].lr_scale
        10.0
    """
    rules = []
    for index, entry in enumerate(param_groups or ()):
        where = f"param_groups[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}={entry!r} is not a mapping.", accepted=("{'match': REGEX, 'lr_scale': x, 'weight_decay': y}",))
        unknown = sorted(set(entry) - set(GROUP_RULE_KEYS))
        if unknown or "match" not in entry:
            raise ConfigError(
                f"{where} has {'unknown key(s) ' + repr(unknown) if unknown else 'no match'}.",
                accepted=GROUP_RULE_KEYS,
                hint="each entry needs 'match' (a regex on parameter names) and may set 'lr_scale' and 'weight_decay'.",
            )
        pattern = entry["match"]
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}.match={pattern!r} is not a string (a regex on parameter names).")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{where}.match={pattern!r} is not a valid regex: {error}.") from None
        lr_scale = _non_negative(entry.get("lr_scale", 1.0), f"{where}.lr_scale")
        weight_decay = entry.get("weight_decay")
        rules.append(GroupRule(pattern, lr_scale, None if weight_decay is None else _non_negative(weight_decay, f"{where}.weight_decay")))
    if layer_decay is not None:
        layer_decay = _non_negative(layer_decay, "layer_decay")
        if not 0 < layer_decay <= 1:
            raise ConfigError(f"layer_decay={layer_decay} must be in (0, 1].", hint="timm's usual values are 0.65-0.85.")
    return Grouping(tuple(rules), layer_decay)


def check_rules_match(grouping: Grouping, names: Sequence[str]) -> None:
    """Every rule must match some trainable parameter name; else a ConfigError listing a few names."""
    for index, rule in enumerate(grouping.rules):
        if not any(re.search(rule.match, name) for name in names):
            sample = ", ".join(repr(n) for n in _spread(names, 6))
            raise ConfigError(
                f"param_groups[{index}].match={rule.match!r} matches no trainable parameter.",
                hint=f"parameter names look like {sample} ({len(names)} in all); the regex is applied with re.search.",
            )


@dataclass(frozen=True)
class LayerMap:
    """Layer id per parameter name for layer-wise LR decay (timm's ``param_groups_layer_decay``)."""

    ids: Mapping[str, int]
    num_layers: int
    blocks: str  # the module list the blocks came from

    def scale(self, name: str, layer_decay: float) -> float:
        return layer_decay ** (self.num_layers - 1 - self.ids[name])

    def describe(self) -> str:
        return (f"layer 0 = parameters before {self.blocks}, layers 1..{self.num_layers - 2} = {self.blocks}[0..{self.num_layers - 3}], "
                f"layer {self.num_layers - 1} = parameters after them (the head)")


def layer_map(named_params: Sequence[tuple[str, Any]], module: nn.Module) -> LayerMap:
    """Layer ids as timm assigns them to a ViT: embeddings 0, block i → i + 1, the rest (final norm, head) last.

    The blocks are the children of the ``nn.ModuleList`` with the most children holding
    parameters (an HF model's ``encoder.layer``, ``h``, ``layers``; a timm ``blocks``).
    Parameters before the first block's (in ``named_parameters`` order) are layer 0, those
    after the last block's are the top layer.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)]), nn.Linear(2, 1))
        >>> m = layer_map(list(net.named_parameters()), net)
        >>> [m.ids[n] for n in ("0.weight", "1.0.weight", "1.1.bias", "2.weight")], m.num_layers
        ([0, 1, 2, 3], 4)
    """
    best: tuple[str, list[str]] | None = None
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList):
            blocks = [f"{name}.{i}" if name else i for i, block in child.named_children() if any(True for _ in block.parameters())]
            if blocks and (best is None or len(blocks) > len(best[1])):
                best = (name, blocks)
    if best is None:
        raise ConfigError(
            f"layer_decay needs the model's blocks in an nn.ModuleList, and {type(module).__name__} has none.",
            hint="use param_groups=[{'match': ..., 'lr_scale': ...}] to scale by name instead.",
        )
    list_name, blocks = best
    ids: dict[str, int] = {}
    seen_block = False
    for name, _ in named_params:
        block = next((i for i, prefix in enumerate(blocks) if name.startswith(prefix + ".")), None)
        if block is not None:
            ids[name], seen_block = block + 1, True
        else:
            ids[name] = len(blocks) + 1 if seen_block else 0
    return LayerMap(ids, len(blocks) + 2, list_name or "the root ModuleList")


def param_groups_declarative(
    named_params: Iterable[tuple[str, torch.Tensor]],
    weight_decay: float | None,
    no_decay: set[str],
    grouping: Grouping,
    layers: LayerMap | None = None,
) -> list[dict]:
    """Groups from ``param_groups=`` rules and ``layer_decay=``, composed with the no-decay rule.

    Each parameter takes the first matching rule's ``lr_scale`` (× its layer's decay factor)
    and ``weight_decay``; unmatched ones keep the Task's defaults. Without a rule's
    ``weight_decay``, weights get the Task's ``weight_decay`` and biases/norms 0 (or, with
    no Task ``weight_decay``, the optimizer's default). Each group carries ``lr_scale``,
    ``name`` and ``num_params`` (elements, counted before any sharding).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> groups = param_groups_declarative(net.named_parameters(), 0.01, no_decay_names(net),
        ...                                   normalize_grouping([{"match": r"^1\\.", "lr_scale": 0.1}], None))
        >>> [(g["name"], g["lr_scale"], g["weight_decay"], len(g["params"])) for g in groups]
        [('default', 1.0, 0.01, 1), ('default/no_decay', 1.0, 0.0, 1), ('^1\\\\.', 0.1, 0.01, 1), ('^1\\\\./no_decay', 0.1, 0.0, 1)]
    """
    groups: dict[tuple[Any, ...], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        rule = next((r for r in grouping.rules if re.search(r.match, name)), None)
        scale = rule.lr_scale if rule is not None else 1.0
        label = rule.match if rule is not None else "default"
        layer = None
        if grouping.layer_decay is not None and layers is not None:
            layer = layers.ids[name]
            scale *= layers.scale(name, grouping.layer_decay)
            label = f"{label}/layer_{layer}" if rule is not None else f"layer_{layer}"
        decayed = name not in no_decay
        if rule is not None and rule.weight_decay is not None:
            decay: float | None = rule.weight_decay
        else:
            decay = (weight_decay if decayed else 0.0) if weight_decay is not None else None
        if not decayed and (rule is None or rule.weight_decay is None) and weight_decay is not None:
            label += "/no_decay"
        key = (label, decay, scale)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"params": [], "name": label, "lr_scale": scale, "num_params": 0}
            if decay is not None:
                group["weight_decay"] = decay
        group["params"].append(param)
        group["num_params"] += param.numel()
    return list(groups.values())


def apply_lr_scales(param_groups: Iterable[dict]) -> None:
    """``lr = lr × lr_scale`` per group, once, before the scheduler records each group's base LR.

    Example:
        >>> opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=0.2)
        >>> apply_lr_scales(opt.param_groups); opt.param_groups[0]["lr"]
        0.1
    """
    for group in param_groups:
        scale = group.get("lr_scale", 1.0)
        if scale != 1.0:
            group["lr"] = group["lr"] * scale


def _non_negative(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ConfigError(f"{what}={value!r} must be a non-negative number.")
    return float(value)


def _spread(names: Sequence[str], count: int) -> list[str]:
    if len(names) <= count:
        return list(names)
    step = (len(names) - 1) / (count - 1)
    return [names[round(i * step)] for i in range(count)]
