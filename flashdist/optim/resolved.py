"""What an LR scheduler was really built with: for the ledger, the report and the checkpoint identity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flashdist.optim.specs import SchedulerSpec


@dataclass(frozen=True)
class ResolvedSchedule:
    """A scheduler spec after the plan filled it in (its warmup in steps, its kwargs as built)."""

    name: str
    kwargs_repr: str
    warmup_steps: int | None
    total_steps_arg: str | None
    interval: str
    frequency: int


def resolve_schedule(spec: SchedulerSpec, kwargs: dict[str, Any] | None, config: Mapping[str, Any] | None = None) -> ResolvedSchedule:
    """Describe the scheduler built from ``spec`` with the resolved ``kwargs`` (None: a recipe or callable).

    ``config`` is the Lightning config it was built with (a recipe may return its own interval).

    Example:
        >>> from flashdist.optim.specs import normalize_scheduler
        >>> spec = normalize_scheduler(("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
        >>> resolve_schedule(spec, {"num_warmup_steps": 2, "num_training_steps": 16}).warmup_steps
        2
    """
    warmup = None
    kwargs_repr = spec.describe()
    total_arg = None
    if spec.entry is not None and kwargs is not None:
        total_arg = spec.entry.total_steps_arg
        for arg in spec.entry.duration_args:
            if "warmup" in arg and arg in kwargs:
                warmup = int(kwargs[arg])
        kwargs_repr = f"{spec.name.lower()}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "schedulers") + ")"
    config = config if config is not None else spec.lightning_config
    return ResolvedSchedule(spec.name, kwargs_repr, warmup, total_arg, config["interval"], config["frequency"])
