"""What Flash, Lightning and transformers users write, as they write it: it works, or it is a
ConfigError at construction (or before the first step) naming their own argument and the fix."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.optim import build_lr_scheduler
from flashdist.tasks.classification import ClassificationTask
from tests.fitting import read_lr_csv


def _loader(n: int = 16, batch_size: int = 4) -> DataLoader:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=batch_size)


def _fit(root, task, max_epochs: int = 1, val: bool = False, **trainer_kwargs) -> dict:
    trainer = flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                num_sanity_val_steps=0, **trainer_kwargs)
    trainer.fit(task, _loader(), _loader() if val else None)
    return json.loads((root / "summary.json").read_text())


def _task(**kwargs) -> ClassificationTask:
    return ClassificationTask(nn.Linear(4, 2), num_classes=2, **kwargs)


class Recipes(ClassificationTask):
    """A Task subclass per module, so the recipes below do not leak into other tests."""


# ---- recipes, as Flash's examples write them ---------------------------------------------------
@Recipes.lr_schedulers
def halve_per_step_config(optimizer):
    return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "interval": "step"}


@Recipes.lr_schedulers
def returns_the_optimizer(optimizer):
    return optimizer  # a common slip


@Recipes.lr_schedulers
def returns_nothing(optimizer):
    torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)  # built, but not returned


@Recipes.optimizers
def sgd_with_own_default(params, lr=0.01):
    return torch.optim.SGD(params, lr=lr)


class StepsOnMetric:
    """A custom metric-driven scheduler, not a torch LRScheduler."""

    def __init__(self, optimizer):
        self.optimizer, self.metrics = optimizer, []

    def step(self, metric):
        self.metrics.append(float(metric))

    def state_dict(self):
        return {"metrics": self.metrics}

    def load_state_dict(self, state):
        self.metrics = state["metrics"]


@Recipes.lr_schedulers
def on_metric_config(optimizer):
    return {"scheduler": StepsOnMetric(optimizer), "reduce_on_plateau": True, "monitor": "val_loss"}


@Recipes.lr_schedulers
def on_metric(optimizer):
    return StepsOnMetric(optimizer)


def test_a_scheduler_recipe_returning_a_lightning_config_steps_per_step(tmp_path):
    task = Recipes(nn.Linear(4, 2), num_classes=2, optimizer="sgd", learning_rate=0.8, lr_scheduler="halve_per_step_config")
    summary = _fit(tmp_path, task)  # 4 steps, the LR halved after each
    assert [row[0] for row in read_lr_csv(tmp_path)] == [0.8, 0.4, 0.2, 0.1]
    assert summary["scheduler_steps"] == summary["optimizer_steps"] == 4


@pytest.mark.parametrize(("recipe", "given"), [("returns_the_optimizer", "Adam"), ("returns_nothing", "NoneType")])
def test_a_recipe_returning_something_else_is_refused_at_construction(recipe, given):
    with pytest.raises(ConfigError, match=rf"{recipe}' gave a {given}, which is not an LR scheduler.*HINT: return a torch"):
        Recipes(nn.Linear(4, 2), num_classes=2, lr_scheduler=recipe)


@pytest.mark.parametrize(("learning_rate", "expected_lr"), [(None, 0.01), (0.2, 0.2)])
def test_an_optimizer_recipe_gets_lr_only_when_a_learning_rate_was_given(tmp_path, learning_rate, expected_lr):
    task = Recipes(nn.Linear(4, 2), num_classes=2, optimizer="sgd_with_own_default", learning_rate=learning_rate)
    _fit(tmp_path, task)
    assert {row[0] for row in read_lr_csv(tmp_path)} == {expected_lr}


def test_an_optimizer_recipe_that_needs_an_lr_says_how_it_is_called():
    @Recipes.optimizers
    def needs_lr(params, lr):
        return torch.optim.SGD(params, lr=lr)

    with pytest.raises(ConfigError, match=r"missing 1 required positional argument: 'lr'.*HINT: an optimizer recipe or callable is called fn\(params\)"):
        Recipes(nn.Linear(4, 2), num_classes=2, optimizer="needs_lr")
    Recipes(nn.Linear(4, 2), num_classes=2, optimizer="needs_lr", learning_rate=0.1)


def test_hf_adafactor_with_its_defaults_trains(tmp_path):
    # relative_step=True, lr=None: the optimizer sizes each step itself; no group LR to log.
    summary = _fit(tmp_path, _task(optimizer="hf:adafactor"), max_epochs=2)
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 8
    assert summary["lr"] == {"first": None, "peak": None, "final": None, "after_last_scheduler_step": None}
    assert all(math.isnan(row[0]) for row in read_lr_csv(tmp_path)) and len(read_lr_csv(tmp_path)) == 8


# ---- metric-driven custom schedulers -------------------------------------------------------------
def test_a_custom_scheduler_whose_step_needs_an_argument_is_refused_when_fit_starts(tmp_path):
    # Not at construction: an lr_scheduler_step assigned to the built module would make it work
    # (tests/tasks/test_peer_suite_habits.py). Refused by fit's checks, before any step.
    with pytest.raises(ConfigError, match=r"StepsOnMetric.step\(\) needs \['metric'\], but Lightning calls step\(\) with no argument.*reduce_on_plateau"):
        _fit(tmp_path, Recipes(nn.Linear(4, 2), num_classes=2, lr_scheduler="on_metric"))
    with pytest.raises(ConfigError, match=r"StepsOnMetric.step\(\) needs \['metric'\]"):
        _fit(tmp_path, _task(lr_scheduler=StepsOnMetric))
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("spec", ["on_metric_config", ("on_metric", {}, {"reduce_on_plateau": True, "monitor": "val_loss"})],
                         ids=["recipe-returns-config", "recipe-with-lightning-config"])
def test_a_custom_metric_driven_scheduler_gets_its_metric_every_epoch(tmp_path, spec):
    task = Recipes(nn.Linear(4, 2), num_classes=2, lr_scheduler=spec)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=3, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, _loader(), _loader())
    metrics = trainer.lr_scheduler_configs[0].scheduler.metrics
    assert len(metrics) == 3 and all(m > 0 for m in metrics)


def test_build_lr_scheduler_on_its_own_needs_no_monitor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler, config = build_lr_scheduler(optimizer, "greedy_schedule")
    scheduler.step(1.0)  # the caller steps it with its own metric
    assert config["reduce_on_plateau"] is True


# ---- interval defaults ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts"])
def test_flash_stepped_schedulers_warn_that_they_step_per_epoch_here(name):
    kwargs = {"StepLR": {"step_size": 10}, "MultiStepLR": {"milestones": [5]}, "CosineAnnealingLR": {"T_max": 10},
              "CosineAnnealingWarmRestarts": {"T_0": 10}}[name]
    with pytest.warns(UserWarning, match=rf"'{name}' steps once per epoch.*Lightning Flash stepped it once per optimizer step"):
        task = _task(lr_scheduler=(name, kwargs))
    assert task.scheduler_spec.lightning_config["interval"] == "epoch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit interval is a choice: no warning
        assert _task(lr_scheduler=(name, kwargs, {"interval": "step"})).scheduler_spec.lightning_config["interval"] == "step"


# ---- bad numbers, named ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"learning_rate": -3.0}, r"learning_rate=-3.0 on the ClassificationTask is negative.*HINT: pass a float", id="negative"),
        pytest.param({"optimizer": "sgd", "learning_rate": float("nan")}, r"learning_rate=nan on the ClassificationTask is not finite", id="nan-sgd"),
        pytest.param({"optimizer": "sgd", "learning_rate": float("inf")}, r"learning_rate=inf on the ClassificationTask is not finite", id="inf-sgd"),
        pytest.param({"optimizer": "adamw", "learning_rate": float("inf")}, r"learning_rate=inf on the ClassificationTask is not finite", id="inf-adamw"),
        pytest.param({"learning_rate": "1e-3"}, r"learning_rate='1e-3' on the ClassificationTask is a string.*HINT: in YAML write 1.0e-3", id="yaml-string"),
        pytest.param({"optimizer": ("adamw", {"weight_decay": "1e-2"})}, r"'AdamW' got weight_decay='1e-2': a string, but AdamW takes a number there", id="kwarg-string"),
        pytest.param({"optimizer": ("sgd", {"momentum": float("nan")})}, r"optimizer 'SGD' got momentum=nan, which is not a finite number", id="kwarg-nan"),
        pytest.param({"optimizer": ("adam", {"betas": (0.9, float("nan"))})}, r"got betas=\(0.9, nan\)", id="betas-nan"),
        pytest.param({"optimizer": ("adam", {"lr": -1.0})}, r"lr=-1.0 in optimizer 'Adam''s kwargs is negative", id="kwarg-lr"),
        pytest.param({"weight_decay": float("nan")}, r"weight_decay=nan on the ClassificationTask must be a finite", id="weight-decay-nan"),
        pytest.param({"lr_scheduler": ("steplr", {"step_size": 3, "gamma": float("nan")}, {"interval": "step"})}, r"got gamma=nan", id="scheduler-nan"),
    ],
)
def test_bad_numbers_are_refused_naming_the_argument(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _task(**kwargs)


# ---- a schedule length the plan contradicts ----------------------------------------------------------
CONTRADICTING = ("linear_schedule_with_warmup", {"num_warmup_steps": 2, "num_training_steps": 1000})


def test_a_user_total_that_contradicts_the_plan_is_refused_before_the_first_step(tmp_path):
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                                enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match=r"num_training_steps=1000 \(a schedule of 1000 steps\), but this fit plans 8 optimizer steps"):
        trainer.fit(_task(lr_scheduler=CONTRADICTING, learning_rate=0.1), _loader())
    assert trainer.global_step == 0


def test_strict_ledger_false_keeps_the_users_total_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"num_training_steps=1000.*Kept \(strict_ledger=False\)"):
        summary = _fit(tmp_path, _task(lr_scheduler=CONTRADICTING, learning_rate=0.1), max_epochs=2, strict_ledger=False)
    assert summary["optimizer_steps"] == 8 and summary["lr"]["final"] > 0.09  # 1000 steps long: it barely decays


@pytest.mark.parametrize(
    "spec",
    [
        ("wsd_schedule", {"num_warmup_steps": 2, "num_stable_steps": 10, "num_decay_steps": 3}),
        ("onecyclelr", {"epochs": 3, "steps_per_epoch": 7, "max_lr": 0.1}),
    ],
    ids=["wsd-parts", "onecycle-epochs"],
)
def test_build_lr_scheduler_refuses_a_length_other_than_num_training_steps(spec):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match=r"a schedule of (15|21) steps\), but this fit plans 40"):
        build_lr_scheduler(optimizer, spec, num_training_steps=40)


def test_a_flash_task_is_tested_and_predicts_as_it_validates(tmp_path):
    # Flash's tasks had test_step and predict_step: trainer.test gives validation's numbers under
    # test_ names, trainer.predict the model's outputs, from the fit's own (inputs, targets) loader.
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.1)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, _loader(), _loader())
    validated = trainer.validate(task, _loader(), verbose=False)[0]
    tested = trainer.test(task, _loader(), verbose=False)[0]
    assert tested == pytest.approx({name.replace("val_", "test_"): value for name, value in validated.items()})
    assert set(tested) == {"test_loss", "test_accuracy"}
    predicted = trainer.predict(task, _loader())
    x = torch.cat([inputs for inputs, _ in _loader()])
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(predicted), task.model(x))
    inputs_only = DataLoader(x, batch_size=4)  # a loader of inputs alone works too
    torch.testing.assert_close(torch.cat(trainer.predict(task, inputs_only)), torch.cat(predicted))


def test_a_second_fit_of_the_same_trainer_is_refused_before_it_trains(tmp_path):
    # Lightning continues the loop counters of a Trainer fit twice, with a new optimizer and scheduler:
    # the schedule would restart at step 8 of a plan counted from 0. Refused before the first step.
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.1,
                              lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, _loader())
    weights = task.model.weight.detach().clone()
    trainer.fit_loop.max_epochs = 4
    with pytest.raises(ConfigError, match=r"already took 8 optimizer steps.*HINT: resume with a new flashdist.Trainer"):
        trainer.fit(task, _loader())
    assert torch.equal(task.model.weight, weights), "no step was taken"


def test_lightnings_lr_finder_then_fit_trains_the_plan_at_the_suggested_rate(tmp_path):
    # Tuner.lr_find runs its own short fit on this Trainer, then restores the step counters: the fit
    # after it is a first fit (not refused as a second one), planned and taken exactly, at the suggestion.
    from lightning.pytorch.tuner import Tuner

    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01,
                              lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.1}))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    finder = Tuner(trainer).lr_find(task, _loader(n=64), num_training=40)
    assert task.learning_rate == finder.suggestion() != 0.01
    trainer.fit(task, _loader(n=64))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 32
    assert max(row[0] for row in read_lr_csv(tmp_path)) == pytest.approx(finder.suggestion())  # the peak LR used
