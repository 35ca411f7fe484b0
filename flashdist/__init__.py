"""flashdist: a distributed training harness on PyTorch Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flashdist.errors import ConfigError
from flashdist.runtime.said_once import install_config_error_hook
from flashdist.version import __version__

# Under torchrun or srun, a ConfigError a user's script leaves uncaught is said once, by global
# rank 0, as one line (runtime/said_once.py); a process no launcher started keeps Python's traceback.
install_config_error_hook()

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
