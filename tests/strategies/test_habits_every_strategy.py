"""A Lightning user's first settings, and third-party optimizers, under every strategy name, on 2 processes.

One ``torchrun`` of 2 CPU processes runs every fit of this module one after the other
(tests/scripts/fit_matrix.py), so the imports and the process start are paid once.

- Habits × every name in flashdist/strategy_names.py (all of them run on CPU; the offloaded
  DeepSpeed names use DeepSpeed's CPU Adam, built once by the ``deepspeed_ops_built`` fixture):
  ``fast_dev_run=True`` (with accumulation 2: one micro-batch, its partial window flushed),
  ``fast_dev_run=3``, ``limit_train_batches=1`` (an int: one batch per epoch), ``=1.0`` (every
  batch) and ``limit_val_batches=0``. Each fit's ledger is exact (planned = optimizer steps =
  scheduler steps = Lightning's ``global_step`` = the DeepSpeed engine's own count), and the
  batches trained and validated are what Lightning documents; after the ``=1.0`` fit the same
  Trainer validates the model again (a second stage: FSDP2 must not shard it twice). A ``fast_dev_run`` fit with a
  logger and checkpointing on leaves neither logs nor checkpoints (Lightning's rule); the same
  fit with ``limit_train_batches=1`` leaves both. The single-device strategy (``devices=1``)
  runs the same five settings in one process: tests/runtime/test_lightning_habits.py.
- Providers: torch_optimizer's ``Yogi`` / ``RAdam`` and schedulefree's ``AdamWScheduleFree``
  routed as torch's optimizers are: under DeepSpeed the Task's optimizer is the engine's client
  optimizer (ZeRO wraps it, offloaded too); under FSDP2 it is built after sharding (its
  parameters are the DTensor shards). Schedule-free is switched to eval for validation and back.
  Schedule-free under DeepSpeed is refused before launch (one process, nothing started).

Sizes: 32 training samples, batch 4, 2 ranks → 4 batches per rank per epoch, 2 epochs; 32
validation samples → 4 validation batches per rank.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from torch import nn

from flashdist.cli.plan import plan_report
from flashdist.strategy_names import FLASHDIST_NAMES
from tests.fitting import run_in_one_torchrun

BASE = dict(dataset_size=32, val_dataset_size=32, batch_size=4, max_epochs=2, extra_trainer={"num_sanity_val_steps": 0})
WITH_LOGS = dict(logger=True, enable_checkpointing=True)  # Lightning's defaults: a TensorBoard logger, a ModelCheckpoint

# name → (fit_tiny settings, optimizer steps, train batches per rank, validation batches per rank), each derived by hand.
HABITS = {
    # one batch of training (a partial accumulation window, flushed) and one of validation, one epoch
    "fast_dev_run=True": (dict(WITH_LOGS, accumulate_grad_batches=2, trainer={"fast_dev_run": True}), 1, 1, 1),
    # three of each, one epoch
    "fast_dev_run=3": (dict(WITH_LOGS, trainer={"fast_dev_run": 3}), 3, 3, 3),
    # the int 1: one batch per epoch for 2 epochs; validation on all 4 batches each epoch
    "limit_train_batches=1": (dict(WITH_LOGS, limit_train_batches=1), 2, 2, 8),
    # the float 1.0: every batch; then trainer.validate(model) on the same Trainer
    "limit_train_batches=1.0": (dict(limit_train_batches=1.0, validate_after_fit=True), 8, 8, 8),
    # no validation at all
    "limit_val_batches=0": (dict(limit_val_batches=0), 8, 8, 0),
}

# (strategy, optimizer) → the route's evidence; 1 epoch of 4 steps each.
PROVIDERS = [
    ("deepspeed_stage_2", "Yogi"),
    ("deepspeed_stage_2_offload", "Yogi"),
    ("deepspeed_stage_3", "torch_optimizer:RAdam"),
    ("fsdp", "Yogi"),
    ("fsdp", "torch_optimizer:RAdam"),
    ("fsdp", "AdamWScheduleFree"),
]
PROVIDER_STEPS = 4


def _habit_config(strategy: str, habit: str, root: Path) -> dict:
    settings, _, _, _ = HABITS[habit]
    settings = dict(settings)
    extra_trainer = {**BASE["extra_trainer"], **settings.pop("trainer", {})}
    return dict(BASE, **settings, strategy=strategy, extra_trainer=extra_trainer, root=str(root / f"{strategy}-{habit}"))


def _provider_config(strategy: str, optimizer: str, root: Path) -> dict:
    return dict(BASE, max_epochs=1, strategy=strategy, optimizer=optimizer, learning_rate=1e-3,
                root=str(root / f"{strategy}-{optimizer.replace(':', '-')}"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, deepspeed_ops_built) -> Path:
    root = tmp_path_factory.mktemp("habits")
    configs = [_habit_config(s, h, root) for s in FLASHDIST_NAMES for h in HABITS]
    configs += [_provider_config(s, o, root) for s, o in PROVIDERS]
    run_in_one_torchrun("fit_matrix.py", configs, timeout_s=900)
    return root


def _read(root: Path) -> tuple[dict, dict, int]:
    summary = json.loads((root / "summary.json").read_text())
    extra = json.loads((root / "fit_extra.json").read_text())
    lr_rows = len((root / "lr.csv").read_text().splitlines()) - 1
    return summary, extra, lr_rows


def _assert_ledger_exact(summary: dict, extra: dict, lr_rows: int, strategy: str, steps: int) -> None:
    assert summary["completed"] is True and summary["strategy"] == strategy
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == steps
    assert extra["global_step"] == lr_rows == steps
    if strategy.startswith("deepspeed"):
        assert extra["engine_global_steps"] == steps  # the engine's own count: flashdist told it where windows end


@pytest.mark.multiprocess
@pytest.mark.parametrize("habit", HABITS)
@pytest.mark.parametrize("strategy", FLASHDIST_NAMES)
def test_lightning_debug_settings_under_every_strategy_name_keep_the_ledger_exact(runs, strategy, habit):
    _, steps, train_batches, val_batches = HABITS[habit]
    root = runs / f"{strategy}-{habit}"
    summary, extra, lr_rows = _read(root)
    _assert_ledger_exact(summary, extra, lr_rows, strategy, steps)
    assert len(extra["losses"]) == train_batches and all(math.isfinite(loss) for _, _, loss in extra["losses"])
    assert extra["val_batches"] == val_batches
    # `flashdist plan` with the same settings said so before the fit.
    settings = HABITS[habit][0]
    planned = plan_report(dataset_size=32, batch_size=4, devices=2, max_epochs=2, strategy=strategy,
                          accumulate_grad_batches=settings.get("accumulate_grad_batches", 1),
                          limit_train_batches=settings.get("limit_train_batches"), fast_dev_run=settings.get("trainer", {}).get("fast_dev_run", 0))
    assert (planned["planned_total_steps"], planned["optimizer_steps_per_epoch"]) == (steps, summary["optimizer_steps_per_epoch"])

    if settings.get("validate_after_fit"):  # the fitted model validated again by the same Trainer, every batch
        validated = extra["validate_after_fit"]
        assert validated["batches"] == 4 and math.isfinite(validated["metrics"]["val_loss"]), validated
    logs, checkpoints = root / "lightning_logs", sorted(p.name for p in root.rglob("*.ckpt"))
    if habit.startswith("fast_dev_run"):  # Lightning: a smoke run logs nothing and saves no checkpoint
        assert not logs.exists() and checkpoints == []
    elif habit == "limit_train_batches=1":  # the same fit, not a smoke run: both, at its last step
        assert (logs / "version_0").is_dir() and checkpoints == [f"epoch=1-step={steps}.ckpt"]


@pytest.mark.multiprocess
@pytest.mark.parametrize(("strategy", "optimizer"), PROVIDERS)
def test_a_provider_optimizer_is_routed_like_torchs_with_an_exact_ledger(runs, strategy, optimizer):
    summary, extra, lr_rows = _read(runs / f"{strategy}-{optimizer.replace(':', '-')}")
    _assert_ledger_exact(summary, extra, lr_rows, strategy, PROVIDER_STEPS)
    class_name = optimizer.split(":")[-1]
    assert extra["optimizer_class"] == summary["optimizer"] == class_name and summary["optimizer_reason"] == "as requested"
    assert all(math.isfinite(loss) for _, _, loss in extra["losses"])
    if strategy.startswith("deepspeed"):
        # The Task's optimizer is the engine's client optimizer, inside ZeRO's wrapper.
        zero = "DeepSpeedZeroOptimizer_Stage3" if "stage_3" in strategy else "DeepSpeedZeroOptimizer"
        assert extra["engine_optimizer_class"] == zero
        if strategy.endswith("offload"):  # ZeRO-Offload runs it on the CPU copy of the weights
            assert extra["deepspeed_config"]["zero_force_ds_cpu_optimizer"] is False
    else:
        # Built after fully_shard: every parameter it updates is a DTensor shard.
        assert extra["optimizer_params"] > 0 and extra["optimizer_dtensor_params"] == extra["optimizer_params"]
    if optimizer == "AdamWScheduleFree":
        assert extra["train_modes"] == [True] * PROVIDER_STEPS
        assert extra["val_modes"] == [False] * 4  # 4 validation batches, each in eval mode
    else:
        assert set(extra["train_modes"]) == {None}  # no modes to switch


def test_schedule_free_under_deepspeed_is_refused_before_any_process_starts(tmp_path):
    import flashdist
    from flashdist import ConfigError
    from flashdist.tasks.classification import ClassificationTask

    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="AdamWScheduleFree", learning_rate=1e-3)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="deepspeed_stage_2", max_epochs=1,
                                logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match=r"'AdamWScheduleFree' \(schedulefree\) cannot run under the deepspeed strategy: .*ZeRO's fp32 copy"):
        trainer.fit(task)  # no loader needed: refused in this process, before Lightning would start rank 1
    assert trainer.ledger.optimizer_steps == 0
