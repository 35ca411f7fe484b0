"""The one exception family flashdist raises for bad user input."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-facing configuration error: what was given, what is accepted, and a hint.

    Example:
        >>> raise ConfigError("optimizer 'adamm' is unknown", accepted=["adam", "adamw"], hint="check the spelling")
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: optimizer 'adamm' is unknown ...
    """

    def __init__(self, message: str, *, accepted: Iterable[str] | str | None = None, hint: str | None = None):
        parts = [message]
        if accepted is not None:
            accepted_text = accepted if isinstance(accepted, str) else ", ".join(repr(a) for a in accepted)
            parts.append(f"Accepted: {accepted_text}.")
        if hint:
            parts.append(f"HINT: {hint}")
        super().__init__(" ".join(parts))


def require_positive_int(value: object, what: str) -> int:
    """``value`` when it is an int of at least 1 (a bool is not); else a ConfigError naming ``what``.

    The one positive-int check of the plan, the launcher and the specs.

    Example:
        >>> require_positive_int(2, "batch_size=2")
        2
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer.", accepted="1, 2, ...")
    return value
