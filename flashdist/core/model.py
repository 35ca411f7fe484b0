"""Re-export: the Task lives in :mod:`flashdist.tasks.model`."""

from flashdist.tasks.model import Task

__all__ = ["Task"]
