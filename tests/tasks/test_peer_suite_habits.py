"""Habits from Flash's and Lightning's own test suites, as a user writes them.

- Lightning's ``test_invalid_lr_scheduler_with_custom_step_method``: a scheduler whose
  ``step()`` takes an argument works when the LightningModule overrides ``lr_scheduler_step``,
  on its class or (Lightning's tests' habit) assigned to the built module; without any override
  it is refused when ``fit`` starts, before a step.
- Flash's recipes return Lightning 1.x scheduler dicts with ``opt_idx``: Lightning 2 ignores it.
- A registry name that is not a string is refused (Flash's registry took any hashable).
"""

from __future__ import annotations

import copy
import json
import types

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.optim import LR_SCHEDULERS, SchedulerEntry, build_lr_scheduler
from flashdist.tasks.classification import ClassificationTask


class StepsOnAnEpochArgument:
    """Not an LRScheduler: step() needs an argument Lightning does not pass (Lightning's test's CustomScheduler)."""

    def __init__(self, optimizer):
        self.optimizer, self.calls = optimizer, []
        self.last_epoch = 0  # the step counter torch's schedulers keep, which the step ledger reads

    def step(self, foobar):
        self.calls.append(foobar)
        self.last_epoch += 1
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5

    def state_dict(self):
        return {"calls": list(self.calls)}

    def load_state_dict(self, state):
        self.calls = list(state["calls"])


def _custom(optimizer):
    return {"scheduler": StepsOnAnEpochArgument(optimizer), "interval": "step"}


class DrivesItsScheduler(ClassificationTask):
    """The user's override: it is what calls step(foobar)."""

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step(self.global_step)


def _loader() -> DataLoader:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)


def test_an_overridden_lr_scheduler_step_is_honoured_at_construction_and_drives_the_fit(tmp_path):
    task = DrivesItsScheduler(nn.Linear(4, 2), num_classes=2, learning_rate=0.1, optimizer="sgd", lr_scheduler=_custom)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, _loader())
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.calls == [1, 2, 3, 4]  # the override's argument, once per optimizer step
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["optimizer_steps"] == summary["scheduler_steps"] == 4


def _trainer(root) -> flashdist.Trainer:
    return flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_lightnings_habit_an_lr_scheduler_step_assigned_after_construction_drives_the_fit(tmp_path):
    """Lightning's own tests assign ``model.lr_scheduler_step = MethodType(fn, model)`` once the module is built."""
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, learning_rate=0.1, optimizer="sgd", lr_scheduler=_custom)

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step(self.global_step)

    task.lr_scheduler_step = types.MethodType(lr_scheduler_step, task)
    trainer = _trainer(tmp_path)
    trainer.fit(task, _loader())
    assert trainer.lr_scheduler_configs[0].scheduler.calls == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["optimizer_steps"] == summary["scheduler_steps"] == 4


def test_without_any_override_the_same_scheduler_is_refused_when_fit_starts_before_a_step(tmp_path):
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, learning_rate=0.1, optimizer="sgd", lr_scheduler=_custom)
    trainer = _trainer(tmp_path)
    with pytest.raises(ConfigError, match=r"StepsOnAnEpochArgument.step\(\) needs \['foobar'\], but Lightning calls step\(\) with no argument"):
        trainer.fit(task, _loader())
    assert trainer.ledger.optimizer_steps == 0 and not (tmp_path / "summary.json").exists()


def test_a_construction_refusal_other_than_the_step_call_still_comes_at_construction():
    def gives_the_optimizer(optimizer):
        return optimizer

    with pytest.raises(ConfigError, match="not an LR scheduler but the optimizer"):
        ClassificationTask(nn.Linear(4, 2), num_classes=2, learning_rate=0.1, optimizer="sgd", lr_scheduler=gives_the_optimizer)


# ---- opt_idx ---------------------------------------------------------------------------------
def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)


def test_a_recipe_dict_with_lightning_1_opt_idx_is_accepted_with_a_warning_and_left_unchanged():
    returned = {}

    def flash_recipe(optimizer):
        returned.update(scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1), interval="step", opt_idx=None)
        return returned

    ClassificationTask(nn.Linear(4, 2), num_classes=2, lr_scheduler=flash_recipe)  # constructs: the dry build accepts it
    with pytest.warns(FutureWarning, match="'opt_idx' is a Lightning 1.x key that Lightning 2 no longer reads"):
        scheduler, config = build_lr_scheduler(_optimizer(), flash_recipe, 10)
    assert "opt_idx" not in config and config["interval"] == "step" and config["scheduler"] is scheduler
    assert set(returned) == {"scheduler", "interval", "opt_idx"}  # the user's dict, as they returned it


def test_opt_idx_in_the_specs_lightning_config_is_dropped_with_a_warning_and_not_mutated():
    lightning_config = {"interval": "step", "opt_idx": 0}
    before = copy.deepcopy(lightning_config)
    with pytest.warns(FutureWarning, match="opt_idx"):
        task = ClassificationTask(nn.Linear(4, 2), num_classes=2, lr_scheduler=("steplr", {"step_size": 1}, lightning_config))
    assert "opt_idx" not in task.scheduler_spec.lightning_config and lightning_config == before


def test_an_opt_idx_of_another_optimizer_is_refused():
    with pytest.raises(ConfigError, match=r"opt_idx=1 names an optimizer other than the Task's one"):
        ClassificationTask(nn.Linear(4, 2), num_classes=2, lr_scheduler=("steplr", {"step_size": 1}, {"opt_idx": 1}))


# ---- registry names --------------------------------------------------------------------------
class Recipes(ClassificationTask):
    """Recipes registered here stay out of other tests' classes."""


@pytest.mark.parametrize("name", [3, 0, "", "  ", ("cosine",), None.__class__])
def test_a_recipe_under_a_non_string_or_empty_name_is_refused(name):
    def halving(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    with pytest.raises(ConfigError, match=r"cannot be registered under the name .* HINT: pass name='my_name'"):
        Recipes.lr_schedulers(halving, name=name)
    assert "halving" not in Recipes.available_lr_schedulers()  # not registered under fn.__name__ either


def test_the_global_registry_refuses_a_non_string_name():
    with pytest.raises(ConfigError, match=r"cannot be registered under the name 7 \(int\)"):
        LR_SCHEDULERS.register(SchedulerEntry(7, torch.optim.lr_scheduler.StepLR, "torch"))
    assert 7 not in [type(n) for n in LR_SCHEDULERS.names()]
