"""Each config section checked against the signature of the class it configures, before jsonargparse parses.

From the user's side (``flashdist fit`` in-process, nothing launches): an unknown key in every
kind of section, with the close match; a missing required argument; a class that does not
import or is not a Task; and what flashdist does not judge, shown in jsonargparse's own words.
Then the signature reading itself, on small classes made here.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest

from flashdist.cli.config_layers import read_run_config
from flashdist.cli.config_validation import Section, validate_run_config
from flashdist.cli.lightning_cli import SECTIONS, logs_under_root_dir, top_level_keys
from flashdist.cli.signatures import accepted_parameters, type_verdict
from flashdist.errors import ConfigError
from tests.cli.cli_runs import CONFIGS, REPO
from tests.cli.test_fit_errors import QUICKSTART, edit, no_launch, refused  # noqa: F401  (no_launch: a fixture)

CASES = {
    "data init arg": (edit("batch_size: 32", "batch_sise: 32"),
                      ["unknown key 'data.init_args.batch_sise'", "SyntheticImageDataModule takes no argument", "'num_samples'",
                       "did you mean 'batch_size'"]),
    "logger inside the trainer": (edit("{name: csv}", "{save_dri: runs/quickstart, name: csv}"),
                                  ["unknown key 'trainer.logger[1].init_args.save_dri'", "CSVLogger", "did you mean 'save_dir'"]),
    "top-level key": (QUICKSTART.replace("seed_everything: 0", "seed_everythng: 0"),
                      ["unknown key 'seed_everythng'", "did you mean 'seed_everything'"]),
    "argument beside class_path": (edit("  class_path: flashdist.data.SyntheticImageDataModule\n",
                                        "  class_path: flashdist.data.SyntheticImageDataModule\n  batch_size: 8\n"),
                                   ["unknown key 'data.batch_size'", "takes class_path and init_args", "data.init_args.batch_size"]),
    "required argument missing": (edit("    num_classes: 4\n    backbone", "    backbone"),
                                  ["model.init_args", "does not give 'num_classes'", "ImageClassifier requires", "--model.init_args.num_classes="]),
    "not a Task": (edit("flashdist.image.ImageClassifier", "torch.nn.Linear"),
                   ["model.class_path='torch.nn.Linear'", "is not a Task", "a subclass of flashdist.tasks.model.Task"]),
    "data class typo": (edit("flashdist.data.SyntheticImageDataModule", "flashdist.data.SyntheticImageDatamodule"),
                        ["data.class_path='flashdist.data.SyntheticImageDatamodule'", "cannot be imported",
                         "did you mean 'flashdist.data.SyntheticImageDataModule'"]),
    "boolean for an int": (edit("max_epochs: 4", "max_epochs: true"), ["trainer.max_epochs=True", "Accepted: int | null"]),
}


@pytest.mark.parametrize("text, fragments", list(CASES.values()), ids=list(CASES))
def test_each_section_is_checked_against_its_classs_signature(tmp_path, capsys, no_launch, text, fragments):
    err = refused(tmp_path, capsys, text)
    assert "bad.yaml" in err, err  # where the key came from
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from:\n{err}"


def test_an_override_is_checked_as_the_init_arg_it_stands_for_and_named_as_the_command_line(tmp_path, capsys, no_launch):
    err = refused(tmp_path, capsys, QUICKSTART, "--data.batch_sise=8")  # --data.key is --data.init_args.key
    assert "unknown key 'data.init_args.batch_sise' on the command line" in err and "did you mean 'batch_size'" in err, err
    err = refused(tmp_path, capsys, QUICKSTART, "--trainer.max_epochs", "four")
    assert "trainer.max_epochs='four' on the command line is not a valid value" in err, err


def test_what_flashdist_does_not_judge_is_jsonargparses_own_message_unchanged(tmp_path, capsys, no_launch):
    # A list of strings where param_groups wants a list of mappings: the items are not checked
    # by flashdist (only the list), so jsonargparse refuses it, and its text is shown as it is.
    err = refused(tmp_path, capsys, edit("    optimizer: adamw\n", "    optimizer: adamw\n    param_groups: [backbone]\n"))
    assert err.startswith("flashdist fit: error: jsonargparse refused the config (from "), err
    assert 'Parser key "model":' in err and "Expected a <class 'dict'>. Got value: backbone" in err, err  # jsonargparse's words
    assert "HINT: `flashdist fit --help` lists every key" in err, err


@pytest.mark.parametrize("layers", [[name] for name in sorted(p.name for p in CONFIGS.glob("*.yaml"))] + [["launch/run.yaml", "launch/paced.yaml"]])
def test_every_shipped_config_passes_the_signature_checks(layers):
    paths = [CONFIGS / name if "/" not in name else REPO / "tests" / name for name in layers]
    run = read_run_config([part for path in paths for part in ("--config", str(path))])
    keys, more = top_level_keys("fit")
    logs_under_root_dir(run.values)  # as FlashdistCLI does first: the configs' loggers take save_dir from default_root_dir
    validate_run_config(run, SECTIONS, keys, other_keys_possible=more)  # no refusal of a config that trains


def test_init_args_kept_across_a_class_change_are_left_to_jsonargparse():
    run = read_run_config(["--config", str(CONFIGS / "quickstart.yaml"), "--model=flashdist.text.TextClassifier"])
    assert run.values["model"]["class_path"] == "flashdist.text.TextClassifier"
    assert run.is_carried(("model", "init_args", "backbone")) and run.source(("model", "class_path")) == "the command line"
    logs_under_root_dir(run.values)
    validate_run_config(run, SECTIONS, top_level_keys("fit")[0])  # TextClassifier has no num_channels; not ours to say


def test_help_and_forms_flashdist_does_not_read_leave_the_arguments_to_jsonargparse():
    for args in (["--help"], ["--model.help", "flashdist.image.ImageClassifier"], ["--trainer.callbacks+=ModelCheckpoint"], ["--trainer.fast_dev_run"]):
        assert read_run_config(args) is None, args


# ---- reading signatures ---------------------------------------------------------------------
class Base:
    def __init__(self, width: int, depth: int = 2):
        pass


class ForwardsToSuper(Base):
    def __init__(self, name: str = "x", **kwargs: Any):
        super().__init__(**kwargs)


class KeepsItsKwargs(Base):
    def __init__(self, **options: Any):
        super().__init__(width=1)
        self.options = options


def test_a_kwargs_handed_to_super_adds_the_parents_arguments():
    accepted = accepted_parameters(ForwardsToSuper)
    assert accepted.names() == ["name", "width", "depth"] and not accepted.open
    assert not accepted.parameters["width"].required  # the child might pass it itself: only its own are required
    assert accepted_parameters(Base).parameters["width"].required


class Holder:
    def __init__(self, part: Base | None = None):  # a class type: under Any jsonargparse keeps a class_path mapping as it is
        pass


def test_a_kwargs_kept_elsewhere_leaves_the_keys_open_and_none_is_refused():
    assert accepted_parameters(KeepsItsKwargs).open
    run = read_run_config([])
    run.values["thing"] = {"part": {"class_path": f"{__name__}.KeepsItsKwargs", "init_args": {"anything": 1}}}
    validate_run_config(run, [Section("thing", target=Holder)], {"thing": None})
    run.values["thing"]["part"]["class_path"] = f"{__name__}.ForwardsToSuper"  # closed: the same key is refused
    with pytest.raises(ConfigError, match=r"unknown key 'thing.part.init_args.anything' .* HINT: "):
        validate_run_config(run, [Section("thing", target=Holder)], {"thing": None})


@pytest.mark.parametrize(
    ("annotation", "value", "from_command_line", "verdict"),
    [
        (int | None, "four", False, "refuse"),
        (int | None, "4", False, "accept"),
        (int, 4.0, False, "refuse"),  # jsonargparse refuses a float for an int, 4.0 included
        (int, True, False, "refuse"),
        (float, "1e-3", False, "accept"),  # PyYAML's string; jsonargparse reads it as a number
        (float, "fast", False, "refuse"),
        (str, [1], False, "refuse"),
        (str, [1], True, "accept"),  # text on the command line, whatever YAML would make of it
        (Literal["strict", "rescale"], "sometimes", False, "refuse"),
        (str | tuple | list, {"name": "adam"}, False, "refuse"),
        (list[dict[str, Any]], ["backbone"], False, "unknown"),  # items: jsonargparse's to judge
        (int, {"class_path": "x.Y"}, False, "unknown"),
    ],
)
def test_type_verdicts_refuse_only_what_surely_cannot_be(annotation, value, from_command_line, verdict):
    assert type_verdict(annotation, value, from_command_line) == verdict
