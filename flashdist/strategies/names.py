"""Strategy names flashdist accepts, resolved to Lightning strategy objects.

``ddp`` stays Lightning's. The DeepSpeed names and a user DeepSpeed config (a dict, or a path
to a JSON file) become :class:`~flashdist.strategies.deepspeed.FlashDeepSpeedStrategy`
(CUDA) or its CPU subclass; ``fsdp`` becomes
:class:`~flashdist.strategies.fsdp.FSDP2Strategy` (FSDP2 ``fully_shard``, CPU or CUDA).
A plain Lightning ``DeepSpeedStrategy`` object is given flashdist's per-epoch accumulation
(see strategies/deepspeed.py). Anything else Lightning knows is passed on unchanged.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from flashdist.compat.lightning import adopt_subclass
from flashdist.errors import ConfigError
from flashdist.strategy_names import DEEPSPEED_NAMES, FLASHDIST_NAMES, FSDP_NAMES

__all__ = ["DEEPSPEED_NAMES", "FLASHDIST_NAMES", "FSDP_NAMES", "load_deepspeed_config", "resolve_strategy", "runs_on_cpu"]


def resolve_strategy(strategy: Any, accelerator: Any) -> Any:
    """The Lightning strategy object (or name) for ``Trainer(strategy=strategy, accelerator=accelerator)``.

    Example:
        >>> type(resolve_strategy("deepspeed_stage_2", "cpu")).__name__
        'CPUDeepSpeedStrategy'
    """
    on_cpu = runs_on_cpu(accelerator)
    if isinstance(strategy, Mapping):
        return _deepspeed(on_cpu, config=dict(strategy))
    if isinstance(strategy, Path) or (isinstance(strategy, str) and strategy.endswith(".json")):
        return _deepspeed(on_cpu, config=load_deepspeed_config(strategy))
    if isinstance(strategy, str):
        name = strategy.strip().lower()
        if name in DEEPSPEED_NAMES:
            return _deepspeed(on_cpu, **DEEPSPEED_NAMES[name])
        if name in FSDP_NAMES:
            from flashdist.strategies.fsdp import FSDP2Strategy

            return FSDP2Strategy()
        _refuse_near_miss(strategy)
        return strategy
    return _adopt_object(strategy, on_cpu)


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether the fit's processes train on CPU (``"auto"`` means CUDA when there is one)."""
    from lightning.pytorch.accelerators import CPUAccelerator

    if isinstance(accelerator, CPUAccelerator):
        return True
    if isinstance(accelerator, str):
        if accelerator == "cpu":
            return True
        if accelerator in ("auto", "gpu", "cuda"):
            return accelerator == "auto" and not torch.cuda.is_available()
    return accelerator is None and not torch.cuda.is_available()


def load_deepspeed_config(path: str | Path) -> dict[str, Any]:
    """Read a DeepSpeed JSON config, refusing a missing file or invalid JSON with a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config {str(path)!r} does not exist.", hint="pass an existing .json path, or a dict.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"DeepSpeed config {str(path)!r} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}.",
            accepted="a JSON object, as in DeepSpeed's documentation",
            hint="check for trailing commas and comments, which JSON does not allow.",
        ) from error
    if not isinstance(config, dict):
        raise ConfigError(f"DeepSpeed config {str(path)!r} holds a {type(config).__name__}, not a JSON object.")
    return config


def _deepspeed(on_cpu: bool, **kwargs: Any) -> Any:
    from flashdist.strategies.deepspeed import CPUDeepSpeedStrategy, FlashDeepSpeedStrategy

    factory: Callable[..., Any] = CPUDeepSpeedStrategy if on_cpu else FlashDeepSpeedStrategy
    return factory(**kwargs)


def _adopt_object(strategy: Any, on_cpu: bool) -> Any:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if type(strategy) is DeepSpeedStrategy:
        from flashdist.strategies.deepspeed import CPUDeepSpeedStrategy, FlashDeepSpeedStrategy

        # Same object and settings; only the methods that make the schedule land (and, on
        # CPU, the device checks) change. The subclasses add no state of their own.
        adopt_subclass(strategy, CPUDeepSpeedStrategy if on_cpu else FlashDeepSpeedStrategy)
    return strategy


def _refuse_near_miss(name: str) -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    known = list(FLASHDIST_NAMES) + [n for n in StrategyRegistry.available_strategies() if n not in FLASHDIST_NAMES]
    if name in known or name == "auto" or name in StrategyRegistry:
        return
    close = difflib.get_close_matches(name.lower(), known, n=3)
    if close:
        raise ConfigError(
            f"strategy={name!r} is not known.",
            accepted=FLASHDIST_NAMES,
            hint=f"did you mean {' or '.join(repr(c) for c in close)}? Lightning's names and strategy objects work too.",
        )
