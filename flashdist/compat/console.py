"""What flashdist keeps off the console: every filter, in one place, with why.

Each filter names one known message that flashdist's own use of a dependency causes (never the
user's): by message, and for a warning by the module it is attributed to; any other warning still
shows. Installed once per process by the ``flashdist`` entry point (``flashdist.cli.main``), by
``flashdist.Trainer``'s construction and by a LoRA wrap (the Python API): importing flashdist in a
program of your own changes no warning filter and no logger.

Example:
    >>> installed = quiet_console({})  # doctest: +SKIP
    >>> [f.name for f in installed]  # doctest: +SKIP
    ['srun hint outside a SLURM job', 'Lightning advertisement tips', 'torch LeafSpec deprecation']
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ConsoleFilter:
    name: str
    kind: Literal["warning", "log"]
    pattern: str  # a regex matched against the start of the message
    why: str
    loggers: tuple[str, ...] = ()  # for kind="log": the loggers that emit it
    module: str = ""  # for kind="warning": a regex of the module the warning is attributed to ("" = any)
    applies: Callable[[Mapping[str, str]], bool] = lambda environ: True
    when: Callable[[], bool] = lambda: True  # for kind="log": asked when the message comes (dependencies loaded by then)


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
    ConsoleFilter(
        "DeepSpeed's CPU accelerator notice",
        "log",
        r"Setting accelerator to CPU\. If you have GPU or other accelerator, we were unable to detect it",
        # DeepSpeed guesses its accelerator at import and logs a WARNING when it finds no GPU; a
        # flashdist fit on CPU imports DeepSpeed in every process. Where torch sees a CUDA device the
        # notice may mean a broken install, so it stays there.
        why="DeepSpeed's guess of the accelerator on a machine without a GPU, once per process",
        loggers=("DeepSpeed",),
        when=lambda: not _cuda_available(),
    ),
    ConsoleFilter(
        "Lightning's sync_dist hint for metrics flashdist reduced itself",
        "warning",
        r"It is recommended to use `self\.log\('(val_loss|val_perplexity)', \.\.\., sync_dist=True\)`",
        # CausalLM sums the validation loss and the token count over the ranks itself (one all-reduce
        # per validation run: a mean over batches would weight tokens unequally) and logs the same
        # number on every rank; sync_dist=True would add a second, useless collective. Lightning
        # hints at any epoch-level tensor logged without sync_dist, so only these names are matched.
        why="Lightning's hint for val_loss / val_perplexity, which CausalLM has already reduced over the ranks",
    ),
    ConsoleFilter(
        "torch all_gather_into_tensor deprecation",
        "warning",
        r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
        # DeepSpeed 0.19's ZeRO (deepspeed/comm/torch.py) calls it; torch 2.13 deprecates it. Drop
        # this when DeepSpeed moves to all_gather_single.
        why="a FutureWarning between two dependencies (torch 2.13, DeepSpeed 0.19), once per rank in a ZeRO fit",
        module=r"torch\.distributed\.c10d_logger",
    ),
    ConsoleFilter(
        "transformers is_gradient_checkpointing deprecation",
        "warning",
        r"`is_gradient_checkpointing` is deprecated",
        # peft 0.x's PeftModel.__init__ reads model.is_gradient_checkpointing, which transformers 5
        # deprecates; flashdist's LoRA wrapping (text/lora.py) and export reach it. Drop this when
        # peft reads is_activation_checkpointing.
        why="a FutureWarning between two dependencies (transformers 5, peft), on every LoRA wrap and export",
        module=r"transformers\.modeling_utils",
    ),
)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str, when: Callable[[], bool]):
        super().__init__()
        self._pattern = re.compile(pattern)
        self._when = when

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._pattern.match(str(record.msg)) and self._when())


_installed_in_this_process: list[ConsoleFilter] | None = None


def quiet_console(environ: Mapping[str, str] | None = None) -> list[ConsoleFilter]:
    """Install :data:`FILTERS` that apply here, once per process; return them. For flashdist's entry points only."""
    global _installed_in_this_process
    if _installed_in_this_process is not None and environ is None:
        return _installed_in_this_process
    environ = os.environ if environ is None else environ
    installed = []
    for entry in FILTERS:
        if not entry.applies(environ):
            continue
        if entry.kind == "warning":
            # By message (and module), any category: matching a category would import Lightning
            # here, and `flashdist plan` must answer without importing it.
            warnings.filterwarnings("ignore", message=entry.pattern, module=entry.module)
        else:
            for name in entry.loggers:
                logging.getLogger(name).addFilter(_DropMessages(entry.pattern, entry.when))
        installed.append(entry)
    if environ is os.environ:
        _installed_in_this_process = installed
    return installed


@contextlib.contextmanager
def dependency_progress_bars_off() -> Iterator[None]:
    """No progress bar of ``datasets`` or ``transformers`` inside the block; each as it was after.

    flashdist's own short steps (tokenizing, packing, saving the token cache, loading or exporting
    a model) would each draw a bar of their own, several to a line in a log file; Lightning's
    training bar is the one progress display of a fit. The caller says in one line what was done.

    Example:
        >>> with dependency_progress_bars_off():
        ...     pass
    """
    import datasets
    import transformers

    datasets_were_on = not datasets.are_progress_bars_disabled()
    transformers_were_on = transformers.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_were_on:
            datasets.enable_progress_bars()
        if transformers_were_on:
            transformers.utils.logging.enable_progress_bar()


__all__ = ["FILTERS", "ConsoleFilter", "dependency_progress_bars_off", "quiet_console"]
