"""Re-export: the Trainer lives in :mod:`flashdist.runtime.trainer`."""

from flashdist.runtime.trainer import Trainer

__all__ = ["Trainer"]
