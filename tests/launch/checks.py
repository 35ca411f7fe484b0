"""A DataModule that records every pre-launch check it takes part in (tests/launch/checked.yaml adds it).

``flashdist.Trainer.fit``'s pre-launch checks call a DataModule's ``before_launch``; this one
appends its process id to ``<default_root_dir>/checks.log``, so a test counts the processes
that ran the checks: one per job, whoever started the ranks.
"""

from __future__ import annotations

import os
from pathlib import Path

from flashdist.data import SyntheticImageDataModule


class RecordsChecks(SyntheticImageDataModule):
    def before_launch(self, model, default_root_dir) -> None:
        Path(default_root_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(default_root_dir) / "checks.log", "a") as log:
            log.write(f"{os.getpid()}\n")


def checking_processes(root: Path) -> list[str]:
    log = Path(root) / "checks.log"
    return log.read_text().split() if log.exists() else []
