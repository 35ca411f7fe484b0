"""Config files as people get them wrong: a key or a section twice, not a mapping, a directory.

Each is refused by ``flashdist fit`` before anything launches, naming the key and both lines,
or saying what a run config looks like.
"""

from __future__ import annotations

import pytest

from flashdist.cli.fit import run
from flashdist.cli.plan import run as plan_run
from tests.cli.test_fit_errors import QUICKSTART, edit, no_launch, refused  # noqa: F401  (no_launch: a fixture)


def _line_of(text: str, fragment: str, start: int = 0) -> int:
    return text[: text.index(fragment, start)].count("\n") + 1


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, capsys, no_launch):
    text = edit("max_epochs: 4", "max_epochs: 4\n  max_epochs: 1")
    first = _line_of(text, "max_epochs: 4")
    err = refused(tmp_path, capsys, text)
    assert f"key 'trainer.max_epochs' is given twice in {tmp_path / 'bad.yaml'}: line {first} and line {first + 1}" in err
    assert "HINT: YAML would silently keep only the second" in err


def test_a_model_argument_given_twice_is_refused(tmp_path, capsys, no_launch):
    text = edit("learning_rate: 3.0e-3", "learning_rate: 3.0e-3\n    learning_rate: 1.0e-1")
    first = _line_of(text, "learning_rate: 3.0e-3")
    err = refused(tmp_path, capsys, text)
    assert f"key 'model.init_args.learning_rate' is given twice" in err and f"line {first} and line {first + 1}" in err


def test_a_section_given_twice_is_refused_before_its_default_root_dir_is_lost(tmp_path, capsys, no_launch):
    text = QUICKSTART + "trainer:\n  max_epochs: 1\n"
    err = refused(tmp_path, capsys, text)
    first, second = _line_of(text, "trainer:"), text.count("\n") - 1
    assert f"section 'trainer:' is given twice in {tmp_path / 'bad.yaml'}: line {first} and line {second}" in err


@pytest.mark.parametrize(
    ("text", "given"),
    [
        ("- trainer\n- model\n", "a list (['trainer', 'model'])"),
        ("quickstart\n", "a string ('quickstart')"),
        ("3\n", "a number (3)"),
        ("", "empty (or only comments)"),
        ("# trainer:\n#   max_epochs: 1\n", "empty (or only comments)"),
    ],
    ids=["list", "scalar", "number", "empty", "only-a-comment"],
)
def test_a_file_that_is_not_a_mapping_says_what_a_run_config_is(tmp_path, capsys, no_launch, text, given):
    err = refused(tmp_path, capsys, text)
    assert f"is {given}, not a mapping" in err
    assert "a run config is a YAML mapping with trainer:, model: and data: sections" in err


def test_a_directory_as_config_says_what_a_run_config_is(tmp_path, capsys, no_launch):
    assert run(["fit", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--config {str(tmp_path)!r} is a directory, not a config file" in err and "trainer:, model: and data:" in err


def test_flashdist_plan_reads_configs_as_strictly(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(edit("max_epochs: 4", "max_epochs: 4\n  max_epochs: 1"))
    assert plan_run(["--config", str(path)]) == 2
    assert "key 'trainer.max_epochs' is given twice" in capsys.readouterr().err
