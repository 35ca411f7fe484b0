"""The one exception family flashdist raises for bad user input."""

from __future__ import annotations

from collections.abc import Iterable


# The exit status of a process that stopped on a ConfigError, on every rank (runtime/said_once.py
# exits with it; launching/agent.py recognises it in torchrun's failure log).
CONFIG_ERROR_EXIT_STATUS = 2


class ConfigError(ValueError):
    """A user-facing configuration error: what was given, what is accepted, and a hint.

    Example:
        >>> raise ConfigError("optimizer 'adamm' is unknown", accepted=["adam", "adamw"], hint="check the spelling")
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: optimizer 'adamm' is unknown ...
    """

    def __init__(
        self,
        message: str,
        *,
        accepted: Iterable[str] | str | None = None,
        hint: str | None = None,
        this_rank_only: bool = False,
    ):
        # Most config errors are found by every rank alike, and global rank 0 alone reports them
        # (runtime/said_once.py). One a rank finds in its own inputs (a checkpoint shard only it
        # reads) is raised there alone, so that rank must say it.
        self.this_rank_only = this_rank_only
        parts = [message]
        if accepted is not None:
            accepted_text = accepted if isinstance(accepted, str) else ", ".join(repr(a) for a in accepted)
            parts.append(f"Accepted: {accepted_text}.")
        if hint:
            parts.append(f"HINT: {hint}")
        super().__init__(" ".join(parts))


def require_int_at_least(value: object, what: str, minimum: int = 1) -> int:
    """``value`` when it is an int (a bool is not) of at least ``minimum``; else a ConfigError naming ``what``.

    The one integer check of the plan, the launcher, the specs and the data modules.

    Example:
        >>> require_int_at_least(2, "num_classes=2", minimum=2)
        2
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an int of at least {minimum}"
        raise ConfigError(f"{what} must be {wanted}.", accepted=f"{minimum}, {minimum + 1}, ...")
    return value


def require_positive_int(value: object, what: str) -> int:
    """``require_int_at_least(value, what, 1)``.

    Example:
        >>> require_positive_int(2, "batch_size=2")
        2
    """
    return require_int_at_least(value, what, 1)
