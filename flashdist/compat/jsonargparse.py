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


def option_names(parser: Any) -> list[str]:
    """The top-level keys a parser accepts (``trainer``, ``model``, ``ckpt_path``, ...).

    Relies on ``parser._actions`` (argparse's list of options, which jsonargparse's parser
    extends); neither argparse nor jsonargparse lists the accepted keys publicly without
    parsing defaults, which fails on required sections.
    """
    return sorted({action.dest.split(".")[0] for action in parser._actions if action.dest not in ("help", "config")})
