"""jsonargparse internals flashdist relies on (jsonargparse 4.53; tests/compat/test_jsonargparse.py)."""

from __future__ import annotations

from typing import Any


def import_object(class_path: str) -> Any:
    """Import ``"package.module.Name"`` the way jsonargparse resolves a config's ``class_path``.

    Relies on ``jsonargparse._util.import_object``: the resolver jsonargparse itself uses
    (same rules for dotted paths and registered aliases); jsonargparse exports no public one.
    """
    from jsonargparse._util import import_object as _import_object  # noqa: PLC2701

    return _import_object(class_path)

