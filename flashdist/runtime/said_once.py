"""A ``ConfigError`` said once per job: global rank 0 raises it, every other rank exits quietly.

Under ``torchrun`` or ``srun`` every rank runs the same construction and checks at the same
time, and a ConfigError found there (or one only a rank can find, from its real loader) is the
same on every rank: printed by each, one message became N. Rank 0 keeps the exception; the
others leave with :data:`CONFIG_ERROR_EXIT_STATUS` and print nothing, so the launcher reports
the job as failed and the message appears once. A process no launcher started is rank 0.
An error raised with ``this_rank_only=True`` (found in inputs only that rank reads, such as its
own checkpoint shard) is said by the rank that found it, whichever it is.

A quiet rank does not leave at once: a launcher stops every worker as soon as one exits, and rank
0, still on its way to the same error, would be stopped before saying it. It waits (at most
:data:`QUIET_RANK_WAIT_S`) for the launcher to stop it, and leaves with status 2 either way.

In a user's own script (``python train.py`` under ``torchrun``, ``srun`` or ``flashdist launch``)
the error is raised where flashdist cannot catch it (building a Task): importing flashdist in a
launched process installs :func:`config_error_hook`, which says it as ``flashdist fit`` does
(rank 0: one line, no traceback; status 2) and leaves the other ranks quiet.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from flashdist.errors import CONFIG_ERROR_EXIT_STATUS, ConfigError
# How long a quiet rank waits for its launcher to stop it (torchrun's agent does within ~0.1 s of
# rank 0's exit; srun with --kill-on-bad-exit, as flashdist's sbatch runs it, too). Rank 0 is
# doing the same work and is rarely more than a few seconds behind; past this the rank leaves anyway.
QUIET_RANK_WAIT_S = 60.0
F = TypeVar("F", bound=Callable[..., Any])


def is_global_rank_zero() -> bool:
    """Whether this process is global rank 0 (or no launcher's rank at all), as Lightning's rank_zero_* see it.

    Lightning sets ``rank_zero_only.rank`` from the launcher's environment at import (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID``) and from the strategy once ranks are set.

    Example:
        >>> is_global_rank_zero()  # a plain process
        True
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def says_it(error: ConfigError) -> bool:
    """Whether this process reports ``error``: global rank 0, or the rank that alone found it.

    Example:
        >>> says_it(ConfigError("bad"))  # a plain process is rank 0
        True
    """
    return error.this_rank_only or is_global_rank_zero()


@contextlib.contextmanager
def config_error_said_once() -> Iterator[None]:
    """Re-raise a ``ConfigError`` on global rank 0; exit quietly with status 2 on any other rank.

    Example:
        >>> with config_error_said_once():
        ...     pass
    """
    try:
        yield
    except ConfigError as error:
        if says_it(error):
            raise
        leave_quietly()


def said_once(method: F) -> F:
    """:func:`config_error_said_once` around a function (``Trainer.__init__``, ``Trainer.fit``)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with config_error_said_once():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def leave_quietly(wait_s: float = QUIET_RANK_WAIT_S) -> NoReturn:
    """Exit with status 2 without a word, once the launcher stops this rank (or after ``wait_s``).

    Rank 0 reports the error; leaving at once could make the launcher stop rank 0 before it did.
    A process no launcher started (no ``TORCHELASTIC_RUN_ID``, ``SLURM_STEP_ID``) leaves at once.

    Example:
        >>> leave_quietly(wait_s=0)
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    if wait_s > 0 and launched_by(os.environ) and threading.current_thread() is threading.main_thread():
        def stopped(signum: int, frame: Any) -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(CONFIG_ERROR_EXIT_STATUS)  # the launcher is tearing the job down: leave as the error's status

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stopped)
        threading.Event().wait(wait_s)  # a signal handler runs during the wait
    raise SystemExit(CONFIG_ERROR_EXIT_STATUS)


def launched_by(environ: Mapping[str, str]) -> str | None:
    """The launcher that started this process and stops its workers together: ``"torchrun"``, ``"srun"`` or None.

    Example:
        >>> launched_by({"TORCHELASTIC_RUN_ID": "flashdist", "RANK": "1"}), launched_by({})
        ('torchrun', None)
    """
    if environ.get("TORCHELASTIC_RUN_ID"):
        return "torchrun"
    if environ.get("SLURM_STEP_ID") is not None and environ.get("SLURM_PROCID") is not None:
        return "srun"
    return None


def config_error_hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """``sys.excepthook`` of a launched process: an uncaught ConfigError said once, as one line, status 2.

    Anything else goes to the hook that was there before.
    """
    if not isinstance(error, ConfigError):
        _previous_hook(kind, error, traceback)
        return
    if says_it(error):
        print(f"flashdist: error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(CONFIG_ERROR_EXIT_STATUS)  # an excepthook cannot choose the status otherwise (Python's is 1)
    try:
        leave_quietly()
    except SystemExit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CONFIG_ERROR_EXIT_STATUS)


_previous_hook = sys.excepthook


def install_config_error_hook(environ: Mapping[str, str] | None = None) -> bool:
    """Install :func:`config_error_hook` when a launcher started this process; whether it did. Done by ``import flashdist``.

    Example:
        >>> install_config_error_hook({})  # not launched: Python's own traceback stays
        False
    """
    global _previous_hook
    if launched_by(os.environ if environ is None else environ) is None:
        return False
    if sys.excepthook is not config_error_hook:
        _previous_hook = sys.excepthook
        sys.excepthook = config_error_hook
    return True
