"""A callback that paces a fit so a test can signal it mid-run (tests/launch/paced.yaml adds it).

Each batch sleeps ``pace_s``; rank 0 writes the global step to ``<default_root_dir>/progress``.
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback


class Pace(Callback):
    def __init__(self, pace_s: float = 0.1):
        self.pace_s = pace_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.pace_s)
        if trainer.is_global_zero:
            Path(trainer.default_root_dir, "progress").write_text(str(trainer.global_step))
