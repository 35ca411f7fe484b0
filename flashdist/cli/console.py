"""What flashdist's own commands keep off the console: every filter, in one place, with why.

Installed by the ``flashdist`` entry point (``flashdist.cli.main``) and nothing else: importing
flashdist in a program of your own changes no warning filter and no logger. Each filter names
one known message; any other warning still shows.

Example:
    >>> installed = quiet_console({})  # doctest: +SKIP
    >>> [f.name for f in installed]  # doctest: +SKIP
    ['srun hint outside a SLURM job', 'Lightning advertisement tips', 'torch LeafSpec deprecation']
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ConsoleFilter:
    name: str
    kind: Literal["warning", "log"]
    pattern: str  # a regex matched against the start of the message
    why: str
    loggers: tuple[str, ...] = ()  # for kind="log": the loggers that emit it
    applies: Callable[[Mapping[str, str]], bool] = lambda environ: True


FILTERS: tuple[ConsoleFilter, ...] = (
    ConsoleFilter(
        "srun hint outside a SLURM job",
        "warning",
        r"The `srun` command is available on your system but is not used",
        # Lightning warns whenever `srun` is on PATH and the process was not started by it, which
        # is every run on a machine with SLURM installed (`make test` installs it). Inside a SLURM
        # job (SLURM_JOB_ID set) the hint is relevant and stays.
        why="Lightning's hint for SLURM users, shown on any machine with `srun` installed; kept inside a SLURM job",
        applies=lambda environ: not environ.get("SLURM_JOB_ID"),
    ),
    ConsoleFilter(
        "Lightning advertisement tips",
        "log",
        r"💡 Tip: ",
        why="Lightning 2.6 advertises its hosted services (litlogger, litmodels) on every Trainer; nothing about the run",
        loggers=("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"),
    ),
    ConsoleFilter(
        "torch LeafSpec deprecation",
        "warning",
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        # torch 2.13 deprecates constructing LeafSpec; Lightning 2.6.6's utilities/_pytree.py still
        # does, twice per fit. Nothing a flashdist user can change; drop this when Lightning moves.
        why="a FutureWarning between two dependencies (torch 2.13, Lightning 2.6.6), printed twice per fit",
    ),
)


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._pattern.match(str(record.msg))


def quiet_console(environ: Mapping[str, str] | None = None) -> list[ConsoleFilter]:
    """Install :data:`FILTERS` that apply here; return them. For flashdist's entry points only."""
    environ = os.environ if environ is None else environ
    installed = []
    for entry in FILTERS:
        if not entry.applies(environ):
            continue
        if entry.kind == "warning":
            # By message, any category: matching a category would import Lightning here, and
            # `flashdist plan` must answer without importing it.
            warnings.filterwarnings("ignore", message=entry.pattern)
        else:
            for name in entry.loggers:
                logging.getLogger(name).addFilter(_DropMessages(entry.pattern))
        installed.append(entry)
    return installed


__all__ = ["FILTERS", "ConsoleFilter", "quiet_console"]
