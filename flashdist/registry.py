"""A small typed registry: explicit registration, case-insensitive lookup, close-match errors.

Entries are frozen dataclasses with a ``name``; the registry never guesses shapes. A child
registry (``Registry(parent=...)``) sees its parent's entries but registers only into itself,
which is how a Task subclass gets recipes that do not leak into its parents.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

from flashdist.errors import ConfigError


class _Named(Protocol):
    @property
    def name(self) -> str: ...


E = TypeVar("E", bound=_Named)
E_co = TypeVar("E_co", bound=_Named, covariant=True)


class Source(Protocol[E_co]):
    """Entries registered on demand: optional packages, third-party entry points.

    Called whenever the registry lists its names or misses a lookup, so it must be cheap and
    idempotent (cache what it found). ``absent(name)`` says why a name it knows of is not
    available here (its package is not installed), or returns None.
    """

    def __call__(self) -> Iterable[E_co]: ...

    def absent(self, name: str) -> str | None: ...


def normalize_name(name: str) -> str:
    """The registry key of a user-facing name: lower case, surrounding blanks stripped."""
    return name.strip().lower()


def resolve_lazy(target: Any) -> Any:
    """Import ``"package.module:attr"`` on first use; return anything else unchanged.

    Optional dependencies (DeepSpeed) are registered as strings so that importing flashdist
    never imports them.
    """
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    return target


class Registry(Generic[E]):
    """Name → entry, case-insensitive.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Entry:
        ...     name: str
        >>> reg = Registry("colour")
        >>> reg.register(Entry("Red"))
        >>> reg.get("RED").name
        'Red'
    """

    def __init__(self, kind: str, parent: Registry[E] | None = None):
        self.kind = kind
        self.parent = parent
        self._entries: dict[str, E] = {}
        self._sources: list[Source[E]] = []
        self._clashes_warned: set[str] = set()

    def add_source(self, source: Source[E]) -> None:
        """Entries that appear when their package is installed (see :class:`Source`)."""
        self._sources.append(source)

    def _pull_sources(self) -> None:
        for source in self._sources:
            for entry in source():
                key = normalize_name(entry.name)
                existing = self._entries.get(key)
                if existing is None:
                    self._entries[key] = entry
                elif existing != entry and key not in self._clashes_warned:
                    # Flash's rule: a name already taken keeps its first owner; say so once.
                    self._clashes_warned.add(key)
                    warnings.warn(
                        f"flashdist: {self.kind} {entry.name!r} from {entry.provider} is not registered: the name is taken "
                        f"by {existing.provider}'s.",
                        UserWarning,
                        stacklevel=3,
                    )

    def register(self, entry: E, override: bool = False) -> None:
        if not isinstance(entry.name, str) or not entry.name.strip():
            raise ConfigError(
                f"a {self.kind} cannot be registered under the name {entry.name!r} ({type(entry.name).__name__}).",
                accepted="a non-empty string",
                hint="pass name='my_name' (a string), or leave name out to use the function's __name__.",
            )
        key = normalize_name(entry.name)
        if not override and key in self:
            raise ConfigError(
                f"a {self.kind} named {entry.name!r} is already registered",
                hint="pick another name, or pass override=True to replace it on purpose.",
            )
        self._entries[key] = entry

    def __contains__(self, name: str) -> bool:
        key = normalize_name(name)
        if key in self._entries or (self.parent is not None and name in self.parent):
            return True
        if self._sources:
            self._pull_sources()
        return key in self._entries

    def get(self, name: str) -> E:
        key = normalize_name(name)
        if key in self._entries:
            return self._entries[key]
        if self.parent is not None and name in self.parent:
            return self.parent.get(name)
        if self._sources:
            self._pull_sources()
            if key in self._entries:
                return self._entries[key]
        reason = self._absent(key)
        if reason is not None:
            raise ConfigError(f"{self.kind} {name!r} is not available here: {reason}.", hint=f"then it is listed by `{self._listing_call()}`.")
        # Closest first, names sharing the typed prefix ahead of mere anagrams ('adamm' → adam, adamw).
        close = difflib.get_close_matches(key, self.names(), n=6, cutoff=0.6)
        matches = sorted(close, key=lambda m: (not m.startswith(key[:3]), close.index(m)))[:3]
        suggestion = f"did you mean {' or '.join(repr(m) for m in matches)}? " if matches else ""
        raise ConfigError(
            f"unknown {self.kind} {name!r}.",
            hint=f"{suggestion}List them all with `{self._listing_call()}`.",
        )

    def _absent(self, key: str) -> str | None:
        """Why a name a source knows of is not available (its package is missing), here or in a parent."""
        for source in self._sources:
            reason = source.absent(key)
            if reason is not None:
                return reason
        return self.parent._absent(key) if self.parent is not None else None

    def names(self) -> list[str]:
        """Every name, parents' first, in registration order."""
        inherited = self.parent.names() if self.parent is not None else []
        if self._sources:
            self._pull_sources()
        return inherited + [k for k in self._entries if k not in inherited]

    def _listing_call(self) -> str:
        return "Task.available_optimizers()" if self.kind == "optimizer" else "Task.available_lr_schedulers()"

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"

