"""Every registered optimizer and scheduler builds and steps on a tiny model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from flashdist import ConfigError
from flashdist.tasks.classification import ClassificationTask
from flashdist.optim import LR_SCHEDULERS, OPTIMIZERS, build_lr_scheduler, build_optimizer
from flashdist.optim.entries import OptimizerEntry
from flashdist.registry import Registry

TORCH_OPTIMIZERS = sorted(
    name.lower() for name, cls in vars(torch.optim).items() if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
)
TORCH_SCHEDULERS = sorted(
    name.lower()
    for name, cls in vars(torch.optim.lr_scheduler).items()
    if isinstance(cls, type) and not name.startswith("_") and cls is not torch.optim.lr_scheduler.LRScheduler
    and (issubclass(cls, torch.optim.lr_scheduler.LRScheduler) or cls is torch.optim.lr_scheduler.ReduceLROnPlateau)
)
HF_SCHEDULES = sorted(
    name.removeprefix("get_")
    for name in vars(__import__("transformers.optimization", fromlist=["x"]))
    if name.startswith("get_") and name.endswith(("schedule", "_with_warmup", "_lr_rate")) and name != "get_scheduler"
)

# Kwargs a few entries cannot do without (everything else builds from its name alone).
SCHEDULER_KWARGS = {
    "lambdalr": {"lr_lambda": lambda step: 0.9**step},
    "multiplicativelr": {"lr_lambda": lambda step: 0.9},
    "steplr": {"step_size": 2},
    "multisteplr": {"milestones": [2, 4]},
    "exponentiallr": {"gamma": 0.9},
    "sequentiallr": {"schedulers": [("linearlr", {"total_iters": 2}), ("exponentiallr", {"gamma": 0.9})], "milestones": [2]},
    "chainedscheduler": {"schedulers": [("constantlr", {}), ("exponentiallr", {"gamma": 0.9})]},
    "cosineannealinglr": {"T_max": 10},
    "cosineannealingwarmrestarts": {"T_0": 3},
    "wsd_schedule": {"num_warmup_steps": 2, "num_decay_steps": 0.3},
    "hf:wsd_schedule": {"num_warmup_steps": 2, "num_decay_steps": 0.3},
    "onecycle": {"cycle_first_step_size": 3},
}
for _prefix in ("", "hf:"):
    for _name in ("cosine_with_min_lr_schedule_with_warmup", "cosine_with_min_lr_schedule_with_warmup_lr_rate"):
        SCHEDULER_KWARGS[_prefix + _name] = {"num_warmup_steps": 0.2, "min_lr_rate": 0.1}
WARMUP = {"num_warmup_steps": 0.2}
METRIC_DRIVEN = {"reducelronplateau", "reduce_on_plateau_schedule", "hf:reduce_on_plateau_schedule", "greedy_schedule", "hf:greedy_schedule"}


def _params(name: str) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    if name == "sparseadam":
        emb = nn.Embedding(10, 4, sparse=True)
        emb(torch.tensor([1, 2])).sum().backward()
        return [emb.weight]
    weight = nn.Parameter(torch.randn(4, 4))
    (weight**2).sum().backward()
    return [weight]  # 2-D only: Muon refuses vectors


def test_registry_lists_every_torch_optimizer_and_scheduler_and_every_transformers_schedule():
    assert set(TORCH_OPTIMIZERS) <= set(OPTIMIZERS.names())
    assert set(TORCH_SCHEDULERS) <= set(LR_SCHEDULERS.names())
    assert HF_SCHEDULES and set(HF_SCHEDULES) <= set(LR_SCHEDULERS.names())
    assert {f"hf:{name}" for name in HF_SCHEDULES} <= set(LR_SCHEDULERS.names())


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).provider in ("torch", "transformers")])
def test_every_torch_optimizer_builds_and_steps(name):
    params = _params(name)
    before = params[0].detach().clone()
    # transformers' Adafactor derives its LR from the step (relative_step) and refuses a fixed one.
    optimizer = build_optimizer(params, name, learning_rate=None if name == "hf:adafactor" else 0.1)
    if name == "lbfgs":
        optimizer.step(lambda: (params[0] ** 2).sum())
    else:
        optimizer.step()
    assert not torch.equal(before, params[0].detach()), f"{name} did not update the parameter"


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).provider == "deepspeed"])
def test_deepspeed_optimizers_are_registered_lazily(name):
    entry = OPTIMIZERS.get(name)
    assert isinstance(entry.target, str) and entry.target.startswith("deepspeed.")


@pytest.mark.parametrize("name", LR_SCHEDULERS.names())
def test_every_scheduler_builds_and_steps(name):
    params = _params("adam")
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    if LR_SCHEDULERS.get(name).requires_optimizer:
        # Built before any backward, as in a fit: AdafactorSchedule reads per-parameter state lazily.
        params = [nn.Parameter(torch.randn(4, 4))]
        optimizer = build_optimizer(params, LR_SCHEDULERS.get(name).requires_optimizer)
    kwargs = SCHEDULER_KWARGS.get(name, dict(WARMUP) if "num_warmup_steps" in LR_SCHEDULERS.get(name).duration_args else {})
    lightning_config = {"monitor": "val_loss"} if name in METRIC_DRIVEN else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler, config = build_lr_scheduler(optimizer, (name, kwargs, lightning_config), num_training_steps=20)
    assert config["scheduler"] is scheduler
    lrs = []
    for _ in range(12):
        if params[0].grad is None:
            (params[0] ** 2).sum().backward()
        optimizer.step()
        scheduler.step(1.0) if name in METRIC_DRIVEN else scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(lr >= 0 for lr in lrs)
    if name not in METRIC_DRIVEN and name not in ("constant_schedule", "hf:constant_schedule", "adafactor_schedule", "hf:adafactor_schedule", "constantlr"):
        assert len(set(lrs)) > 1, f"{name} never changed the LR"


def test_a_schedule_without_a_total_is_not_handed_one():
    optimizer = torch.optim.SGD(_params("sgd"), lr=0.1)
    for name in ("constant_schedule", "constant_schedule_with_warmup", "inverse_sqrt_schedule"):
        kwargs = WARMUP if name != "constant_schedule" else {}
        # build_lr_scheduler would raise TypeError from transformers if it passed num_training_steps
        build_lr_scheduler(optimizer, (name, dict(kwargs)), num_training_steps=50)
        assert LR_SCHEDULERS.get(name).total_steps_arg is None


def test_lookup_is_case_insensitive():
    for given in ("Adam", "adam", "ADAM"):
        assert OPTIMIZERS.get(given).target is torch.optim.Adam
    assert LR_SCHEDULERS.get("StepLR") is LR_SCHEDULERS.get("steplr")
    assert LR_SCHEDULERS.get("reducelronplateau").target is torch.optim.lr_scheduler.ReduceLROnPlateau


def test_register_refuses_a_duplicate_unless_override():
    registry: Registry[OptimizerEntry] = Registry("optimizer")
    registry.register(OptimizerEntry("Mine", torch.optim.SGD, "torch"))
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(OptimizerEntry("MINE", torch.optim.Adam, "torch"))
    registry.register(OptimizerEntry("mine", torch.optim.Adam, "torch"), override=True)
    assert registry.get("Mine").target is torch.optim.Adam


def test_available_names_on_every_task_class():
    from flashdist.image import ImageClassifier
    from flashdist.text import TextClassifier

    for cls in (ClassificationTask, ImageClassifier, TextClassifier):
        assert cls.available_optimizers()[0] == "adadelta" and "sgd" in cls.available_optimizers()
        assert cls.available_lr_schedulers()[0] == "lambdalr"
        assert "cosineannealingwarmrestarts" in cls.available_lr_schedulers()
