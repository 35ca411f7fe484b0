"""flashdist: a distributed training harness on PyTorch Lightning."""

from flashdist.core.model import Task
from flashdist.core.trainer import Trainer
from flashdist.errors import ConfigError

__version__ = "0.1.0"

__all__ = ["ConfigError", "Task", "Trainer", "__version__"]
