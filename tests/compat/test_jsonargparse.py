"""Each jsonargparse internal flashdist relies on (flashdist/compat/jsonargparse.py), tested by name."""

from __future__ import annotations

from flashdist.compat import jsonargparse as compat


def test_import_object_resolves_a_dotted_class_path():
    from flashdist.tasks.model import Task

    assert compat.import_object("flashdist.tasks.model.Task") is Task

