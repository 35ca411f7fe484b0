"""The pre-launch check's marker (flashdist/launching/checked.py): a rank whose starter checked the
same command skips the checks, once; another command, or the same one with a changed config
file, checks again. The multi-process side (Lightning's launcher, flashdist launch) is asserted
in test_torchrun.py's launches, which count the processes that ran the checks."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.launching.checked import (
    CHECKED_ENV,
    command_digest,
    mark_checked,
    running_command,
    take_checked,
    this_command,
    was_checked,
)
from flashdist.tasks.classification import ClassificationTask


def test_the_digest_changes_with_a_word_and_with_what_a_named_config_file_holds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text("trainer: {max_epochs: 1}\n")
    command = ["flashdist", "fit", "--config", "run.yaml"]
    before = command_digest(command)
    assert command_digest(list(command)) == before
    assert command_digest([*command, "--trainer.max_epochs=2"]) != before
    config.write_text("trainer: {max_epochs: 2}\n")
    assert command_digest(command) != before  # same words, another config: checked again
    other = tmp_path / "other.yaml"
    other.write_text("trainer: {max_epochs: 2}\n")
    assert command_digest(["flashdist", "fit", "--config=other.yaml"]) != command_digest(["flashdist", "fit", "--config=run.yaml"])


def test_a_marker_is_taken_once_and_only_for_its_own_command():
    environ: dict[str, str] = {}
    mark_checked(environ, ["flashdist", "fit", "--config", "a.yaml"])
    assert was_checked(environ, ["flashdist", "fit", "--config", "a.yaml"]) and CHECKED_ENV in environ
    assert not take_checked(dict(environ), ["flashdist", "fit", "--config", "b.yaml"])
    assert take_checked(environ, ["flashdist", "fit", "--config", "a.yaml"])
    assert not take_checked(environ, ["flashdist", "fit", "--config", "a.yaml"])  # a second fit checks again


def test_the_flashdist_command_is_named_the_same_however_the_process_was_started():
    with running_command(["flashdist", "fit", "--config", "run.yaml"]):
        assert this_command() == ["flashdist", "fit", "--config", "run.yaml"]
    assert this_command()[0] == os.path.abspath(os.sys.argv[0])  # outside: the script, by its absolute path


class RecordsChecks(ClassificationTask):
    def __init__(self) -> None:
        super().__init__(nn.Linear(4, 2), num_classes=2, learning_rate=0.1, optimizer="sgd")
        self.checks = 0

    def before_launch(self) -> None:
        self.checks += 1
        super().before_launch()


def _fit(root, task) -> flashdist.Trainer:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    trainer = flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_steps=2, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4))
    return trainer


@pytest.mark.parametrize("starter_checked, checks", [("this command", 0), ("another command", 1), ("nothing", 1)])
def test_a_fit_skips_the_checks_only_when_its_starter_checked_this_very_command(tmp_path, monkeypatch, starter_checked, checks):
    if starter_checked != "nothing":
        command = this_command() if starter_checked == "this command" else [*this_command(), "--changed"]
        monkeypatch.setenv(CHECKED_ENV, command_digest(command))
    task = RecordsChecks()
    _fit(tmp_path, task)
    assert task.checks == checks
    assert CHECKED_ENV not in os.environ  # taken, and the mark for Lightning's launched ranks removed after the fit


class NeedsAnArgument:
    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, epoch):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_bad_config_is_still_refused_before_a_step_when_the_marker_names_another_command(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKED_ENV, command_digest([*this_command(), "--changed"]))
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, learning_rate=0.1, optimizer="sgd", lr_scheduler=NeedsAnArgument)
    with pytest.raises(ConfigError, match=r"NeedsAnArgument.step\(\) needs \['epoch'\]"):
        _fit(tmp_path, task)
