"""Re-export: the classification task lives in :mod:`flashdist.tasks.classification`."""

from flashdist.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask"]
