"""A ``ConfigError`` said once per job: global rank 0 raises it, every other rank exits quietly.

Under ``torchrun`` or ``srun`` every rank runs the same construction and checks at the same
time, and a ConfigError found there (or one only a rank can find, from its real loader) is the
same on every rank: printed by each, one message became N. Rank 0 keeps the exception; the
others leave with :data:`CONFIG_ERROR_EXIT_STATUS` and print nothing, so the launcher reports
the job as failed and the message appears once. A process no launcher started is rank 0.
An error raised with ``this_rank_only=True`` (found in inputs only that rank reads, such as its
own checkpoint shard) is said by the rank that found it, whichever it is.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flashdist.errors import ConfigError

CONFIG_ERROR_EXIT_STATUS = 2  # flashdist fit's status for a config error, on every rank
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
        raise SystemExit(CONFIG_ERROR_EXIT_STATUS) from None


def said_once(method: F) -> F:
    """:func:`config_error_said_once` around a function (``Trainer.__init__``, ``Trainer.fit``)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with config_error_said_once():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
