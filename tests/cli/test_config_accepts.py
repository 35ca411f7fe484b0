"""Configs LightningCLI (jsonargparse) accepts are not refused by flashdist's own checks, and what it refuses stays refused.

From the user's side, in-process: the ``flashdist fit`` command a LightningCLI user types, with
``Trainer.fit`` replaced by a recorder (nothing trains), or with ``--print_config`` (jsonargparse
prints the config it merged, so the test reads what jsonargparse made of the layers); and the
pre-launch check ``flashdist launch`` runs. Then the signature reading on small classes made here.
"""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal

import pytest
import torch
import yaml

import flashdist.runtime.trainer
from flashdist.cli.config_layers import read_run_config
from flashdist.cli.config_validation import Section, validate_run_config
from flashdist.cli.fit import check, run
from flashdist.cli.signatures import accepted_parameters, type_verdict
from flashdist.errors import ConfigError

# A run small enough to build in a moment: one CPU device, no logger, a tiny ResNet.
BASE = """\
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 1
  logger: false
  enable_checkpointing: false
  enable_model_summary: false
model:
  class_path: flashdist.image.ImageClassifier
  init_args: {num_classes: 4, backbone: resnet_tiny, learning_rate: 0.003}
data:
  class_path: flashdist.data.SyntheticImageDataModule
  init_args: {num_classes: 4, num_samples: 64, image_size: 16, batch_size: 8}
"""


@pytest.fixture
def fit_calls(monkeypatch, tmp_path):
    """``flashdist fit`` runs in ``tmp_path`` and records what ``Trainer.fit`` was called with instead of training."""
    calls: list[dict[str, Any]] = []
    trainer = flashdist.runtime.trainer.Trainer

    @functools.wraps(trainer.fit)  # the CLI reads fit's signature (ckpt_path) through it
    def recorded_fit(self, *args, **kwargs):
        calls.append({"trainer": self, **kwargs})

    monkeypatch.setattr(trainer, "fit", recorded_fit)
    monkeypatch.chdir(tmp_path)
    return calls


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fit(capsys, *args: str) -> tuple[int, str, str]:
    status = run(["fit", *args])
    out, err = capsys.readouterr()
    return status, out, err


def printed(capsys, *args: str) -> dict[str, Any]:
    """The config jsonargparse merged, as ``--print_config`` shows it."""
    status, out, err = fit(capsys, *args, "--print_config")
    assert status == 0, err
    return yaml.safe_load(out)


# ---- 13: the pre-launch check reads the fit subcommand's own arguments -----------------------
def test_the_prelaunch_check_takes_ckpt_path_auto_as_fit_does(tmp_path, fit_calls, capsys):
    config = write(tmp_path, "run.yaml", BASE)
    # `flashdist launch ... flashdist fit --config run.yaml --ckpt_path=auto`: the README's resume command
    assert check(["fit", "--config", str(config), "--ckpt_path=auto"]) == 0, capsys.readouterr().err
    resume = write(tmp_path, "resume.yaml", BASE + "ckpt_path: auto\n")
    assert check(["fit", "--config", str(resume)]) == 0, capsys.readouterr().err
    assert fit_calls == []  # a check, not a fit
    assert check(["fit", "--config", str(config), "--ckpt_pth=auto"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'ckpt_pth' on the command line" in err and "did you mean 'ckpt_path'" in err, err


def test_fit_hands_ckpt_path_to_trainer_fit(tmp_path, fit_calls, capsys):
    status, _, err = fit(capsys, "--config", str(write(tmp_path, "run.yaml", BASE)), "--ckpt_path=auto")
    assert status == 0, err
    assert [call["ckpt_path"] for call in fit_calls] == ["auto"]


# ---- 1: --print_config prints a template -----------------------------------------------------
def test_print_config_prints_an_incomplete_config_as_jsonargparse_does(tmp_path, fit_calls, capsys):
    assert set(printed(capsys)) >= {"trainer", "model", "data"}  # no config at all: the template
    model = printed(capsys, "--model=flashdist.image.ImageClassifier")["model"]  # num_classes not given yet
    assert model["class_path"] == "flashdist.image.ImageClassifier"
    status, _, err = fit(capsys, "--trainer.max_epoch=1", "--print_config")  # a wrong key is still refused
    assert status == 2 and "did you mean 'max_epochs'" in err, err


# ---- 2: a mapping without class_path over an earlier class is its init_args -----------------
def test_a_later_plain_mapping_is_the_init_args_of_the_class_before(tmp_path, fit_calls, capsys):
    base = str(write(tmp_path, "a.yaml", BASE))
    later = str(write(tmp_path, "b.yaml", "model: {learning_rate: 0.01}\n"))
    model = printed(capsys, "--config", base, "--config", later)["model"]
    assert model["class_path"] == "flashdist.image.ImageClassifier"
    assert model["init_args"]["learning_rate"] == 0.01 and model["init_args"]["num_classes"] == 4
    for layers in (["--config", base, "--config", later], ["--config", base, "--model={learning_rate: 0.01}"]):
        status, _, err = fit(capsys, *layers)
        assert status == 0, err
    status, _, err = fit(capsys, "--config", base, "--config", str(write(tmp_path, "c.yaml", "model: {learnin_rate: 0.01}\n")))
    assert status == 2 and "unknown key 'model.init_args.learnin_rate' in" in err and "c.yaml" in err, err
    # With no class before it, jsonargparse builds the section's base class (a plain Task) from the mapping
    model = printed(capsys, "--model={learning_rate: 0.01}")["model"]
    assert model["class_path"] == "flashdist.Task" and model["init_args"]["learning_rate"] == 0.01, model


# ---- 3: a section given as the path of a file of its own -------------------------------------
def test_a_section_given_as_a_file_is_read_from_that_file(tmp_path, fit_calls, capsys):
    trainer = yaml.safe_load(BASE)["trainer"]
    write(tmp_path, "parts/trainer.yaml", yaml.safe_dump({**trainer, "max_epochs": 3}))
    write(tmp_path, "parts/model.yaml", "class_path: flashdist.image.ImageClassifier\ninit_args: {num_classes: 4, backbone: resnet_tiny}")
    rest = BASE[BASE.index("data:"):]
    main = write(tmp_path, "parts/run.yaml", "trainer: trainer.yaml\nmodel: model.yaml\n" + rest)  # relative to run.yaml's folder
    status, _, err = fit(capsys, "--config", str(main))
    assert status == 0, err
    assert fit_calls[-1]["trainer"].max_epochs == 3
    status, _, err = fit(capsys, "--config", str(main), "--trainer=parts/trainer.yaml")  # on the command line: from the cwd
    assert status == 0, err
    write(tmp_path, "parts/bad_trainer.yaml", yaml.safe_dump({**trainer, "max_epoch": 3}))
    status, _, err = fit(capsys, "--config", str(main), "--trainer=parts/bad_trainer.yaml")
    assert status == 2 and "unknown key 'trainer.max_epoch' in" in err and "bad_trainer.yaml" in err, err


# ---- 4: config: inside a file includes another; $schema: is for editors ----------------------
def test_config_inside_a_file_includes_that_file_and_schema_is_ignored(tmp_path, fit_calls, capsys):
    write(tmp_path, "base.yaml", BASE)
    top = write(tmp_path, "top.yaml", "$schema: https://example.invalid/s.json\nconfig: base.yaml\ntrainer: {max_epochs: 2}\n")
    status, _, err = fit(capsys, "--config", str(top))
    assert status == 0, err
    assert fit_calls[-1]["trainer"].max_epochs == 2  # the keys after `config:` override the included file
    write(tmp_path, "bad_base.yaml", BASE.replace("max_epochs: 1", "max_epoch: 1"))
    status, _, err = fit(capsys, "--config", str(write(tmp_path, "top2.yaml", "config: bad_base.yaml\n")))
    assert status == 2 and "unknown key 'trainer.max_epoch' in" in err and "bad_base.yaml" in err, err


# ---- 5: appends ------------------------------------------------------------------------------
def test_appends_to_a_list_are_left_to_jsonargparse(tmp_path, fit_calls, capsys):
    base = str(write(tmp_path, "a.yaml", BASE))
    monitor = "lightning.pytorch.callbacks.LearningRateMonitor"
    in_file = write(tmp_path, "b.yaml", f"trainer:\n  callbacks+:\n    - class_path: {monitor}\n")
    for layers in (["--config", str(in_file)], ["--trainer.callbacks+", monitor]):
        callbacks = printed(capsys, "--config", base, *layers)["trainer"]["callbacks"]
        assert [c["class_path"] for c in callbacks] == [monitor], callbacks


# ---- 8, 10: where --config comes from --------------------------------------------------------
def test_config_from_stdin_from_home_and_as_long_inline_text(tmp_path, fit_calls, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(BASE))
    status, _, err = fit(capsys, "--config", "-")
    assert status == 0, err
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "run.yaml", BASE)
    status, _, err = fit(capsys, "--config", "~/run.yaml")
    assert status == 0, err
    inline = yaml.safe_dump(yaml.safe_load(BASE), default_flow_style=True, width=10_000).strip()
    assert len(inline) > 255  # longer than a file name may be
    status, _, err = fit(capsys, "--config", inline)
    assert status == 0, err
    status, _, err = fit(capsys, "--config", inline.replace("max_epochs", "max_epoch"))
    assert status == 2 and "unknown key 'trainer.max_epoch' in the --config text" in err, err


# ---- 11, 12: messages ------------------------------------------------------------------------
@pytest.mark.parametrize("text", [BASE + "1: one\n", BASE.replace("num_classes: 4, backbone", "on: 3, num_classes: 4, backbone")],
                         ids=["top level", "class argument"])
def test_a_key_yaml_reads_as_a_number_or_a_boolean_is_a_config_error(tmp_path, fit_calls, capsys, text):
    status, _, err = fit(capsys, "--config", str(write(tmp_path, "bad.yaml", text)))
    assert status == 2 and "flashdist fit: error: unknown key" in err and "Traceback" not in err, err
    assert "YAML read this key as the" in err, err


def test_a_replaced_list_is_named_after_the_file_that_replaced_it(tmp_path, fit_calls, capsys):
    loggers = "  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n      init_args: {save_dir: runs, name: csv}\n"
    base = write(tmp_path, "a.yaml", BASE.replace("  logger: false\n", loggers))
    # b.yaml's logger misspells an argument of CSVLogger (a missing save_dir is filled from default_root_dir)
    later = write(tmp_path, "b.yaml", "trainer:\n  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n      init_args: {nmae: csv}\n")
    status, _, err = fit(capsys, "--config", str(base), "--config", str(later))
    assert status == 2 and "unknown key 'trainer.logger[0].init_args.nmae'" in err, err
    assert "b.yaml" in err and "a.yaml" not in err, err


# ---- 6, 7, 9: reading signatures -------------------------------------------------------------
class Optimizers:
    def __init__(self, optimizer: Callable[[Iterable], torch.optim.Optimizer] | None = None, extra: dict[str, Any] | None = None,
                 anything: Any = None):
        pass


class PopsAKwarg(Optimizers):
    def __init__(self, **kwargs: Any):
        self.scale = kwargs.pop("scale", 1.0)  # a key no parameter names
        super().__init__(**kwargs)


class IterateKwargs(Optimizers):
    def __init__(self, **kwargs: Any):
        self.extra = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith("x_")}
        super().__init__(**kwargs)


class NotSelf:
    def __init__(this, size: int, mode: Literal[16, 32] = 32):  # noqa: N805
        pass


def _validate(target: type, init_args: dict[str, Any]) -> None:
    run = read_run_config([])
    run.values["thing"] = init_args
    validate_run_config(run, [Section("thing", target=target)], {"thing": None})


def test_objects_under_dict_any_or_a_callable_are_left_to_jsonargparse():
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}  # params: the callable's to supply
    _validate(Optimizers, {"optimizer": sgd, "extra": {"x": {"class_path": "no.such.Class"}}, "anything": {"class_path": "x.Y"}})


def test_kwargs_read_by_name_are_accepted_and_other_uses_leave_the_class_open():
    accepted = accepted_parameters(PopsAKwarg)
    assert {"scale", "optimizer"} <= set(accepted.names()) and not accepted.open
    _validate(PopsAKwarg, {"scale": 2.0})
    with pytest.raises(ConfigError, match=r"unknown key 'thing.scael'.*did you mean 'scale'"):
        _validate(PopsAKwarg, {"scael": 2.0})
    assert accepted_parameters(IterateKwargs).open
    _validate(IterateKwargs, {"x_anything": 1})


def test_the_first_parameter_of_init_is_the_instance_whatever_its_name_and_literals_convert_text():
    assert accepted_parameters(NotSelf).names() == ["size", "mode"]
    _validate(NotSelf, {"size": 1})
    assert type_verdict(Literal[16, 32], "16") != "refuse" and type_verdict(Literal[16, 32], 16) == "accept"
    assert type_verdict(Literal[1], True) == "accept"  # jsonargparse compares with ==, as Python does
    assert type_verdict(Literal["a", "b"], "c") == "refuse"
