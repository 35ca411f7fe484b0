"""flashdist: a distributed training harness on PyTorch Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flashdist.errors import ConfigError
from flashdist.version import __version__

if TYPE_CHECKING:
    from flashdist.tasks.model import Task
    from flashdist.runtime.trainer import Trainer


def __getattr__(name: str):
    # Task and Trainer pull in Lightning (seconds); loaded on first use so that `flashdist plan`
    # and `flashdist.plan` answer without it.
    if name == "Task":
        from flashdist.tasks.model import Task

        return Task
    if name == "Trainer":
        from flashdist.runtime.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'flashdist' has no attribute {name!r}")


__all__ = ["ConfigError", "Task", "Trainer", "__version__"]
