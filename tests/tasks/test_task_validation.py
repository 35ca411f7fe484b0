"""Bad specs fail at construction with a ConfigError; nothing the caller passed is mutated."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from torch import nn

from flashdist import ConfigError, Task
from flashdist.tasks.classification import ClassificationTask
from flashdist.optim import build_lr_scheduler


def task(**kwargs):
    return ClassificationTask(nn.Linear(4, 2), num_classes=2, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"optimizer": "adamm"}, r"unknown optimizer 'adamm'.*did you mean 'adam' or 'adamw'", id="unknown-optimizer"),
        pytest.param({"optimizer": ("Adam", {"amsgradd": True})}, r"unknown argument 'amsgradd'.*did you mean 'amsgrad'", id="unknown-kwarg"),
        pytest.param({"optimizer": "sgd", "learning_rate": -0.1}, r"learning_rate=-0.1 on the ClassificationTask is negative", id="negative-lr"),
        pytest.param({"optimizer": ("sgd", {"momentum": -1.0})}, r"Invalid momentum value: -1.0", id="dry-build"),
        pytest.param({"optimizer": ("adam", {"lr": 0.1}), "learning_rate": 0.2}, r"learning_rate=0.2 and the optimizer's lr=0.1 disagree", id="lr-twice"),
        pytest.param({"optimizer": 3}, r"optimizer=3 has type int.*Accepted", id="bad-optimizer-type"),
        pytest.param({"optimizer": ("adam", ["amsgrad"])}, r"item 1 must be a dict", id="kwargs-not-dict"),
        pytest.param({"lr_scheduler": "steplr"}, r"'StepLR' is missing required argument\(s\) \['step_size'\]", id="missing-kwarg"),
        pytest.param({"lr_scheduler": "stepp"}, r"unknown lr_scheduler 'stepp'.*did you mean", id="unknown-scheduler"),
        pytest.param({"lr_scheduler": ("steplr", {"step_size": 2}, {"intervall": "step"})}, r"unknown key\(s\) \['intervall'\]", id="config-key"),
        pytest.param({"lr_scheduler": ("steplr", {"step_size": 2}, {"interval": "batch"})}, r"interval='batch' is not valid.*'step', 'epoch'", id="interval"),
        pytest.param({"lr_scheduler": ("steplr", {"step_size": 2}, {"frequency": 0})}, r"frequency=0 must be a positive int", id="frequency"),
        pytest.param({"lr_scheduler": "reducelronplateau"}, r"steps on a metric, but no 'monitor'", id="plateau-without-monitor"),
        pytest.param({"lr_scheduler": ("linear_schedule_with_warmup", {"num_warmup_steps": -1})}, r"num_warmup_steps=-1 is negative", id="negative-warmup"),
        pytest.param({"lr_scheduler": ("linear_schedule_with_warmup", {"num_warmup_steps": 1.5})}, r"float outside \[0, 1\)", id="float-warmup-ge-1"),
        pytest.param({"lr_scheduler": ("linear_schedule_with_warmup", {"num_warmup_steps": "2weeks"})}, r"is not a duration", id="bad-duration"),
        pytest.param({"lr_scheduler": ("linear_schedule_with_warmup", {"num_warmup_steps": 50, "num_training_steps": 20})}, r"num_warmup_steps=50 is not less than the 20", id="warmup-over-total"),
        pytest.param({"lr_scheduler": "adafactor_schedule"}, r"works only with optimizer 'hf:adafactor'", id="schedule-needs-its-optimizer"),
        pytest.param({"weight_decay": -1}, r"weight_decay=-1 on the ClassificationTask must be a finite non-negative", id="weight-decay"),
    ],
)
def test_bad_specs_fail_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        task(**kwargs)


def test_config_error_is_a_value_error_with_a_hint():
    with pytest.raises(ValueError, match="HINT: did you mean"):
        task(optimizer="adamm")


def test_warmup_longer_than_the_planned_total_fails_before_training(tmp_path):
    import flashdist
    from torch.utils.data import DataLoader, TensorDataset

    model = task(lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 10}))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), batch_size=2)
    with pytest.raises(ConfigError, match="num_warmup_steps=10 is not less than the 4 training steps"):
        trainer.fit(model, loader)
    assert trainer.global_step == 0


def test_user_dicts_are_never_mutated():
    optimizer_kwargs = {"betas": [0.8, 0.9], "amsgrad": True}
    scheduler_kwargs = {"num_warmup_steps": 0.1}
    lightning_config = {"interval": "step", "scheduler": "ignored"}
    snapshot = copy.deepcopy((optimizer_kwargs, scheduler_kwargs, lightning_config))
    with pytest.warns(UserWarning, match="'scheduler' key is overridden"):
        model = task(optimizer=("adam", optimizer_kwargs), lr_scheduler=("cosine_schedule_with_warmup", scheduler_kwargs, lightning_config))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _, config = build_lr_scheduler(opt, model.scheduler_spec, num_training_steps=100)
    assert (optimizer_kwargs, scheduler_kwargs, lightning_config) == snapshot
    assert config["scheduler"] != "ignored" and config["interval"] == "step"
    with pytest.raises(TypeError):
        model.optimizer_spec.kwargs["amsgrad"] = False  # the frozen spec refuses edits too


def test_accepted_forms_of_optimizer():
    for spec in ("Adam", ("adam", {"amsgrad": True}), partial(torch.optim.Adam, amsgrad=True), torch.optim.Adam):
        assert task(optimizer=spec, learning_rate=1e-3).optimizer_spec.entry.target is torch.optim.Adam
    custom = task(optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr * 2), learning_rate=0.1)
    assert custom.optimizer_spec.entry is None and custom.optimizer_spec.factory is not None


def test_lightning_config_defaults_follow_the_spec():
    torch_config = task(lr_scheduler=("steplr", {"step_size": 1})).scheduler_spec.lightning_config
    assert dict(torch_config) == {"interval": "epoch", "frequency": 1, "monitor": "val_loss", "strict": True, "name": None}
    assert task(lr_scheduler="constant_schedule").scheduler_spec.lightning_config["interval"] == "step"  # Hugging Face: per step


def test_a_plain_task_needs_a_loss_fn():
    model = Task(nn.Linear(2, 1))
    with pytest.raises(ConfigError, match="has no loss_fn"):
        model.compute_loss(torch.zeros(1), torch.zeros(1))
