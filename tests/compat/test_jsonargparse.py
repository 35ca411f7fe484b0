"""Each jsonargparse internal flashdist relies on (flashdist/compat/jsonargparse.py), tested by name."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from flashdist.compat import jsonargparse as compat


def test_import_object_resolves_a_dotted_class_path():
    from flashdist.tasks.model import Task

    assert compat.import_object("flashdist.tasks.model.Task") is Task


def test_option_names_lists_a_parsers_top_level_keys():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--trainer.max_epochs", type=int)
    parser.add_argument("--ckpt_path", type=str)
    assert compat.option_names(parser) == ["ckpt_path", "trainer"]
