"""``tests/scripts/fit_tiny.py`` with a pace: each batch sleeps ``pace_s`` and rank 0 writes the
global step to ``<root>/progress``, so a test can signal a run at a known point (mid-run preemption).

``python tests/launch/fit_paced.py '<json config>'`` with fit_tiny's keys plus ``pace_s``.
A wrapper rather than an edit of fit_tiny.py: the pace is only for the launch tests, and
fit_tiny builds its Trainer through ``flashdist.Trainer``, which this swaps for a paced subclass.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.scripts

from lightning.pytorch import Callback  # noqa: E402

import flashdist  # noqa: E402
from tests.scripts import fit_tiny  # noqa: E402


class Pace(Callback):
    def __init__(self, root: str, pace_s: float):
        self.progress = Path(root) / "progress"
        self.pace_s = pace_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.pace_s)
        if trainer.is_global_zero:
            self.progress.write_text(str(trainer.global_step))


def main(config: dict) -> None:
    pace = Pace(config["root"], float(config.pop("pace_s", 0.0)))
    base = flashdist.Trainer

    class PacedTrainer(base):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), pace], **kwargs)

    flashdist.Trainer = PacedTrainer
    fit_tiny.main(config)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
