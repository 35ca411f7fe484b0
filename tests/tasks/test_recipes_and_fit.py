"""Recipes, manual optimization, metric-driven schedules in a real fit, weight-decay groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from lightning.pytorch.core.optimizer import LightningOptimizer
from flashdist import ConfigError
from flashdist.tasks.classification import ClassificationTask
from flashdist.image import ImageClassifier
from flashdist.text import TextClassifier
from tests.fitting import read_lr_csv


def loader(n=8, batch_size=2, features=4, classes=2):
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, features, generator=generator), torch.arange(n) % classes), batch_size=batch_size)


def trainer(tmp_path, **kwargs):
    defaults = dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return flashdist.Trainer(**{**defaults, **kwargs})


def test_recipes_register_by_name_and_do_not_leak_into_parents():
    class Child(ClassificationTask):
        pass

    @Child.lr_schedulers
    def child_only_steplr(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)

    @Child.optimizers
    def child_only_sgd(params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=0.5)

    assert "child_only_steplr" in Child.available_lr_schedulers()
    assert "child_only_steplr" not in ClassificationTask.available_lr_schedulers()
    assert "child_only_sgd" not in ImageClassifier.available_optimizers()
    model = Child(nn.Linear(4, 2), num_classes=2, optimizer="child_only_sgd", lr_scheduler="child_only_steplr", learning_rate=0.1)
    assert model.scheduler_spec.entry.provider == "recipe"
    with pytest.raises(ConfigError, match="unknown lr_scheduler 'child_only_steplr'"):
        ClassificationTask(nn.Linear(4, 2), num_classes=2, lr_scheduler="child_only_steplr")
    with pytest.raises(ConfigError, match="already registered"):
        Child.lr_schedulers(child_only_steplr)


def test_recipe_trains_in_a_fit(tmp_path):
    class Recipes(ClassificationTask):
        pass

    @Recipes.lr_schedulers
    def halve_every_step(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    model = Recipes(nn.Linear(4, 2), num_classes=2, optimizer="sgd", learning_rate=0.8,
                    lr_scheduler=("halve_every_step", {}, {"interval": "step"}))
    fit = trainer(tmp_path, max_epochs=1)
    fit.fit(model, loader())
    assert [row[0] for row in read_lr_csv(tmp_path)] == [0.8, 0.4, 0.2, 0.1]


class ManualTask(ClassificationTask):
    def __init__(self, **kwargs):
        super().__init__(nn.Linear(4, 2), num_classes=2, **kwargs)
        self.automatic_optimization = False
        self.seen = []

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        inputs, targets = batch
        loss = self.compute_loss(self(inputs), targets)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        scheduler.step()
        self.seen.append((isinstance(optimizer, LightningOptimizer), type(scheduler).__name__))
        return loss


def test_manual_optimization_still_gets_lightnings_methods(tmp_path):
    model = ManualTask(optimizer="sgd", learning_rate=0.1, lr_scheduler=("steplr", {"step_size": 1}))
    trainer(tmp_path, max_epochs=1).fit(model, loader())
    assert model.seen == [(True, "StepLR")] * 4


def test_plateau_scheduler_really_steps_on_the_monitored_metric(tmp_path):
    # Constant inputs: val_accuracy is 0.5 every epoch. Epoch 1 sets best=0.5; epochs 2 and 3 do not
    # improve on it, so with patience=0 the LR halves after each of them (seen from epoch 3 on).
    data = DataLoader(TensorDataset(torch.zeros(4, 4), torch.tensor([0, 1, 0, 1])), batch_size=2)
    model = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="sgd", learning_rate=0.1,
                               lr_scheduler=("reducelronplateau", {"mode": "max", "patience": 0, "factor": 0.5}, {"monitor": "val_accuracy"}))
    fit = trainer(tmp_path, max_epochs=3)
    fit.fit(model, data, data)
    scheduler = fit.lr_scheduler_configs[0].scheduler
    assert scheduler.best == pytest.approx(0.5)  # val_accuracy, not val_loss
    assert [row[0] for row in read_lr_csv(tmp_path)] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    assert fit.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)  # and reduced again after epoch 3


def test_a_never_logged_monitor_fails_loudly(tmp_path):
    model = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="sgd",
                               lr_scheduler=("reducelronplateau", {}, {"monitor": "val_f1"}))
    with pytest.raises(Exception, match="val_f1"):
        trainer(tmp_path, max_epochs=1).fit(model, loader(), loader())


def test_weight_decay_groups_exclude_bias_and_norm(tmp_path):
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    model = ClassificationTask(net, num_classes=2, optimizer="adamw", learning_rate=0.01, weight_decay=0.1)
    fit = trainer(tmp_path, max_epochs=1)
    fit.fit(model, loader())
    groups = fit.optimizers[0].param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert decayed == {id(net[0].weight), id(net[2].weight)}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_dict_batches_and_text_classifier(tmp_path):
    ids = torch.randint(1, 1000, (8, 6), generator=torch.Generator().manual_seed(0))
    batches = [{"input": {"input_ids": ids[i : i + 2]}, "target": torch.tensor([0, 1])} for i in range(0, 8, 2)]
    model = TextClassifier(num_classes=2, backbone="tiny-bert", optimizer="adamw", learning_rate=1e-3,
                           lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.25}))
    fit = trainer(tmp_path, max_epochs=1)
    fit.fit(model, DataLoader(batches, batch_size=None))
    summary = fit.ledger.summary(fit, model, completed=True)
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 4
    assert summary["planned_warmup_steps"] == 1 and summary["lr"]["after_last_scheduler_step"] == 0.0


def test_image_classifier_refuses_downloads_and_unknown_backbones():
    with pytest.raises(ConfigError, match="never does at run time"):
        ImageClassifier(num_classes=2, pretrained=True)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet19'"):
        ImageClassifier(num_classes=2, backbone="resnet19")
    with pytest.raises(ConfigError, match="num_classes=1 must be an int of at least 2"):
        ImageClassifier(num_classes=1)


def test_image_classifier_loads_local_weights(tmp_path):
    source = ImageClassifier(num_classes=3, backbone="resnet_tiny")
    source.model.save_pretrained(tmp_path)
    loaded = ImageClassifier(num_classes=3, backbone="resnet_tiny", pretrained=str(tmp_path))
    for a, b in zip(source.model.parameters(), loaded.model.parameters()):
        assert torch.equal(a, b)
