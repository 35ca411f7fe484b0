"""LoRA settings for ``CausalLM(lora=...)``: validated at construction, applied through ``peft``.

Keys: ``r`` (rank), ``alpha``, ``dropout``, ``target_modules`` (module-name suffixes, as peft
matches them; None = peft's default for the model type) and ``merge_on_export`` (export the
base with the adapters merged in, rather than an adapter directory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from flashdist.errors import ConfigError, require_positive_int

_KEYS = ("r", "alpha", "dropout", "target_modules", "merge_on_export")


@dataclass(frozen=True)
class LoraSettings:
    """The user's ``lora=`` dict, checked and frozen (the dict itself is never touched)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    merge_on_export: bool = False

    @classmethod
    def from_user(cls, lora: Mapping[str, Any]) -> LoraSettings:
        """Example:
        >>> LoraSettings.from_user({"r": 4, "target_modules": ["q_proj"]}).target_modules
        ('q_proj',)
        """
        if not isinstance(lora, Mapping):
            raise ConfigError(f"lora={lora!r} is not a mapping.", accepted=_KEYS, hint='lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}')
        unknown = sorted(set(lora) - set(_KEYS))
        if unknown:
            raise ConfigError(f"lora has unknown key(s) {unknown}.", accepted=_KEYS)
        r = lora.get("r", 8)
        require_positive_int(r, f"lora.r={r!r}")
        alpha = lora.get("alpha", 16)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ConfigError(f"lora.alpha={alpha!r} must be a positive number.")
        dropout = lora.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"lora.dropout={dropout!r} must be in [0, 1).")
        targets = lora.get("target_modules")
        if targets is not None:
            if isinstance(targets, str):
                targets = [targets]
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(f"lora.target_modules={targets!r} must be a non-empty list of module names.")
            targets = tuple(targets)
        merge = lora.get("merge_on_export", False)
        if not isinstance(merge, bool):
            raise ConfigError(f"lora.merge_on_export={merge!r} must be true or false.")
        return cls(r, float(alpha), float(dropout), targets, merge)

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "target_modules": list(self.target_modules) if self.target_modules else None, "merge_on_export": self.merge_on_export}


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """``peft.get_peft_model`` with the settings; target modules that match nothing are refused first."""
    from peft import LoraConfig, get_peft_model

    from flashdist.compat.console import quiet_console

    quiet_console()  # peft's wrap reads a deprecated transformers attribute (compat/console.py)
    if settings.target_modules is not None:
        check_targets(model, settings.target_modules)
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) if settings.target_modules else None, task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:  # e.g. no default target modules for this model type
        raise ConfigError(f"lora could not be applied: {error}", accepted=sorted(adaptable_module_names(model))[:12],
                          hint="name lora.target_modules explicitly.") from None


def check_targets(model: nn.Module, targets: tuple[str, ...]) -> None:
    """Refuse target names that match no module (peft matches a name or a dotted suffix)."""
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        raise ConfigError(
            f"lora.target_modules {missing} match no module of the model.",
            accepted=sorted(adaptable_module_names(model))[:12],
            hint="name Linear layers by their last name component, e.g. q_proj, v_proj (Llama) or c_attn (GPT-2).",
        )


def adaptable_module_names(model: nn.Module) -> set[str]:
    """The last name component of every Linear-like layer: what LoRA can target."""
    out = set()
    for name, module in model.named_modules():
        if name and (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
            out.add(name.rsplit(".", 1)[-1])
    return out
