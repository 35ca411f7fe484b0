"""Optimizers from optional packages and third-party entry points, used as their users name them.

torch_optimizer and schedulefree are in the test environment and train in real fits.
bitsandbytes and torchao are not (pyproject's ``lowbit`` extra: importable, they slow every
process start): without them their names are refused with the package to install; with them
(``pip install -e '.[lowbit]'``) the tests marked below train them on CPU. The example plugin
comes from tests/fixtures/flashdist_example_plugin (see conftest.py).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError, Task
from flashdist.optim import OPTIMIZERS, OptimizerEntry
from flashdist.optim.providers import Provider, ProviderSource, bitsandbytes_device_problem, default_providers
from flashdist.optim.specs import OptimizerSpec, normalize_optimizer
from flashdist.registry import Registry
from flashdist.strategies.base import unwrap_optimizer as innermost_optimizer
from flashdist.strategies.base import check_optimizer_runs_here
from flashdist.tasks.classification import ClassificationTask
from tests.fitting import read_lr_csv


HAVE = {name: importlib.util.find_spec(name) is not None for name in ("bitsandbytes", "torchao")}


def needs(package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not HAVE[package], reason=f"{package} is not installed (pyproject's lowbit extra)")


def _loader(n: int = 16, batch_size: int = 4) -> DataLoader:
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=batch_size)


def _task(**kwargs) -> ClassificationTask:
    torch.manual_seed(0)
    # 64×64 weights: 4096 elements, the size from which bitsandbytes and torchao keep 8-bit state.
    return ClassificationTask(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)), num_classes=2, **kwargs)


def _trainer(root, **kwargs) -> flashdist.Trainer:
    defaults = dict(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return flashdist.Trainer(**{**defaults, **kwargs})


def _summary(root) -> dict:
    return json.loads((root / "summary.json").read_text())


# ---- listing and naming ----------------------------------------------------------------------
def test_installed_providers_are_listed_under_flashs_names():
    names = Task.available_optimizers()
    assert {"yogi", "adabelief", "adamwschedulefree"} <= set(names)
    assert "torch_optimizer:radam" in names and "lookahead" not in names  # a wrapper, not an optimizer of params
    # Flash's rule where names clash: torch keeps "RAdam"; torch_optimizer's has its prefix.
    assert normalize_optimizer("RAdam").entry.target is torch.optim.RAdam
    assert normalize_optimizer("torch_optimizer:RAdam").entry.provider == "torch_optimizer"
    assert normalize_optimizer("YOGI").entry.name == "Yogi"  # case-insensitive, as every name


@pytest.mark.parametrize(("package", "name"), [("bitsandbytes", "bnb:AdamW8bit"), ("torchao", "torchao:AdamW8bit")])
def test_a_low_bit_provider_is_listed_exactly_when_installed(package, name):
    assert (name.lower() in Task.available_optimizers()) == HAVE[package]
    if not HAVE[package]:
        with pytest.raises(ConfigError, match=rf"'{name}' is not available here: .*'{package}', which is not installed \(pip install {package}\)"):
            _task(optimizer=name)


def test_a_provider_that_is_not_installed_is_refused_with_the_package_to_install():
    registry = Registry("optimizer")
    registry.add_source(ProviderSource((Provider("flashdist_no_such_package", "no-such-package",
                                                 (OptimizerEntry("Hypothetical", "flashdist_no_such_package:Opt", "plugin"),)),)))
    assert "hypothetical" not in registry.names()
    with pytest.raises(ConfigError, match=r"'Hypothetical' is not available here: .*'no-such-package', which is not installed \(pip install no-such-package\)"):
        registry.get("Hypothetical")


# ---- each provider trains ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).provider in ("torch_optimizer", "schedulefree")])
def test_every_installed_provider_optimizer_builds_and_steps(name):
    param = nn.Parameter(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    before = param.detach().clone()
    optimizer = flashdist.optim.build_optimizer([param], name, learning_rate=0.1)
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()  # schedule-free (the Task does this in a fit)
    for _ in range(5):  # RAdam-style rectification leaves the first updates at zero
        param.grad = torch.ones_like(param)
        optimizer.step()
    assert not torch.equal(before, param.detach()), f"{name} did not update the parameter"


@pytest.mark.parametrize(
    ("name", "state_is_low_bit"),
    [
        ("Yogi", None),
        pytest.param("bnb:AdamW8bit", lambda state: state["state1"].dtype == torch.uint8, marks=needs("bitsandbytes")),
    ],
    ids=["torch_optimizer", "bitsandbytes"],
)
def test_a_provider_optimizer_trains_with_an_exact_ledger(tmp_path, name, state_is_low_bit):
    trainer = _trainer(tmp_path)
    trainer.fit(_task(optimizer=name, learning_rate=1e-3), _loader())
    summary = _summary(tmp_path)
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == 4
    optimizer = innermost_optimizer(trainer.optimizers[0])
    assert type(optimizer).__name__ == name.split(":")[-1] == summary["optimizer"]
    if state_is_low_bit is not None:
        weight = trainer.lightning_module.model[0].weight
        assert state_is_low_bit(optimizer.state[weight])


@needs("torchao")
def test_torchao_low_bit_adamw_steps_on_cpu():
    # torchao's low-bit step is torch.compile'd: one parameter, one shape, one compile (a full
    # fit compiles one kernel per parameter shape: minutes on a busy 2-core machine).
    weight = nn.Parameter(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    before = weight.detach().clone()
    optimizer = flashdist.optim.build_optimizer([weight], "torchao:AdamW8bit", learning_rate=1e-2)
    for _ in range(2):
        weight.grad = torch.ones_like(weight)
        optimizer.step()
    assert type(optimizer.state[weight]["exp_avg"]).__name__ == "OptimState8bit"
    assert torch.allclose(weight, before - 2e-2, atol=2e-3)  # Adam's first steps move each weight by ~lr


# ---- schedule-free: train/eval switching and exact resume ------------------------------------------
class RecordModes(Callback):
    def __init__(self):
        self.train_modes, self.val_modes = [], []

    def _mode(self, trainer) -> bool:
        return innermost_optimizer(trainer.optimizers[0]).param_groups[0]["train_mode"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train_modes.append(self._mode(trainer))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_modes.append(self._mode(trainer))


def test_schedule_free_is_switched_to_eval_for_validation_and_back(tmp_path):
    record = RecordModes()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[record], num_sanity_val_steps=1)
    trainer.fit(_task(optimizer="AdamWScheduleFree", learning_rate=1e-2), _loader(), _loader(8))
    assert record.train_modes == [True] * 8
    assert record.val_modes == [False] * 5  # 1 sanity batch, then 2 per epoch
    assert innermost_optimizer(trainer.optimizers[0]).param_groups[0]["train_mode"] is False  # fitted model = eval weights


def test_schedule_free_resumes_exactly_from_a_mid_epoch_checkpoint(tmp_path):
    def fit(root, ckpt_path=None):
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
        trainer = _trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
        task = _task(optimizer="SGDScheduleFree", learning_rate=0.05)
        trainer.fit(task, _loader(), _loader(8), ckpt_path=ckpt_path)
        return task

    uninterrupted = fit(tmp_path / "full")
    (step3,) = (tmp_path / "ckpt").glob("*step=3.ckpt")
    resumed = fit(tmp_path / "resumed", ckpt_path=str(step3))
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert read_lr_csv(tmp_path / "resumed")[-5:] == read_lr_csv(tmp_path / "full")[-5:]


# ---- strategies and devices ---------------------------------------------------------------------
def test_schedule_free_is_refused_under_deepspeed_with_the_reason():
    spec = normalize_optimizer("AdamWScheduleFree")
    with pytest.raises(ConfigError, match=r"cannot run under the deepspeed strategy: schedule-free .* ZeRO's fp32 copy"):
        check_optimizer_runs_here(spec, "deepspeed", torch.device("cpu"))
    check_optimizer_runs_here(spec, "fsdp", torch.device("cpu"))  # the optimizer holds the model's own (sharded) weights


def _provider_spec(name: str) -> OptimizerSpec:
    """The registry's entry for ``name`` whether or not its package is installed (routing needs no import)."""
    (entry,) = [e for p in default_providers(()) for e in p.entries if e.name == name]
    return OptimizerSpec(entry=entry)


def test_bitsandbytes_is_refused_under_fsdp2_with_the_reason():
    with pytest.raises(ConfigError, match=r"'bnb:AdamW8bit' \(bitsandbytes\) cannot run under the fsdp strategy: .*DTensors"):
        check_optimizer_runs_here(_provider_spec("bnb:AdamW8bit"), "fsdp", torch.device("cpu"))
    if HAVE["bitsandbytes"]:  # (its device check imports it)
        check_optimizer_runs_here(_provider_spec("bnb:AdamW8bit"), "deepspeed", torch.device("cpu"))  # a 2-process ZeRO-2 fit trained it (README)


@needs("bitsandbytes")
def test_bitsandbytes_says_which_devices_its_build_serves():
    assert bitsandbytes_device_problem(torch.device("cpu")) is None  # bitsandbytes >= 0.46 has a CPU backend
    problem = bitsandbytes_device_problem(torch.device("meta"))
    assert problem.startswith("bitsandbytes 0.") and "no meta backend" in problem
    with pytest.raises(ConfigError, match=r"'bnb:AdamW8bit' \(bitsandbytes\) cannot run on meta: bitsandbytes"):
        check_optimizer_runs_here(_provider_spec("bnb:AdamW8bit"), "ddp", torch.device("meta"))


# ---- a third-party package, through its entry points ----------------------------------------------
def test_a_plugin_package_adds_an_optimizer_and_a_scheduler(tmp_path, example_plugin):
    assert "example:signsgd" in Task.available_optimizers()
    assert "example:halving" in Task.available_lr_schedulers()
    task = _task(optimizer="example:signsgd", learning_rate=0.4, lr_scheduler="example:halving")
    _trainer(tmp_path).fit(task, _loader())
    assert [row[0] for row in read_lr_csv(tmp_path)] == [0.4, 0.2, 0.1, 0.05]
    assert _summary(tmp_path)["optimizer"] == "SignSGD"


def test_a_broken_plugin_warns_once_and_leaves_the_rest_working(tmp_path, monkeypatch):
    dist_info = tmp_path / "broken_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[flashdist.optimizers]\nbroken = flashdist_no_such_module:optimizers\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match=r"entry point 'broken' \(flashdist_no_such_module:optimizers\).*failed to load"):
        names = OPTIMIZERS.names()
    assert "adamw" in names
