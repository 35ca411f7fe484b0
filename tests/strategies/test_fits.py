"""Real 2-process CPU fits (gloo) for every strategy name, then a resume from epoch 1.

Sizes where batches per epoch are not a multiple of the accumulation: 200 samples over 2
ranks, batch 8 → 13 micro-batches per rank per epoch, accumulation 3 → 5 optimizer steps per
epoch (4 full windows and a partial one), 10 in 2 epochs. Left alone, Lightning + DeepSpeed
would step its scheduler 8 times and the engine 8 times.

Each strategy costs two fits: an uninterrupted one that checkpoints at every epoch end, then
a fit resumed from its epoch-1 checkpoint in the same directory, which must reproduce the
rest of the LR sequence bit for bit and the losses closely.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.fitting import run_fit

pytestmark = pytest.mark.usefixtures("deepspeed_ops_built")

SIZES = dict(dataset_size=200, batch_size=8, accumulate_grad_batches=3, max_epochs=2, weight_decay=0.01)
PLANNED_STEPS = 10
STEPS_PER_EPOCH = 5

# strategy → (optimizer class under it, route's reason contains)
CASES = {
    "ddp": ("AdamW", "as requested"),
    "deepspeed_stage_1": ("AdamW", "not offloaded and not on CUDA"),
    "deepspeed_stage_2": ("AdamW", "not offloaded and not on CUDA"),
    "deepspeed_stage_2_offload": ("DeepSpeedCPUAdam", "offloaded to CPU"),
    "deepspeed_stage_3": ("AdamW", "not offloaded and not on CUDA"),
    "deepspeed_stage_3_offload": ("DeepSpeedCPUAdam", "offloaded to CPU"),
    "fsdp": ("AdamW", "fused=True"),
}


def _lr_rows(root: Path) -> list[str]:
    """lr.csv without its last column (grad_norm, compared within a tolerance by _grad_norms_close)."""
    return [line.rsplit(",", 1)[0] for line in (root / "lr.csv").read_text().splitlines()]


def _grad_norms(root: Path) -> list[float]:
    return [float(line.rsplit(",", 1)[1]) for line in (root / "lr.csv").read_text().splitlines()[1:]]


def _grad_norms_close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(math.isclose(g, w, rel_tol=1e-5) for g, w in zip(got, want))


def _extra(root: Path) -> dict:
    return json.loads((root / "fit_extra.json").read_text())


def _checkpoint_after_epoch_1(root: Path) -> Path:
    (path,) = (root / "checkpoints").glob(f"epoch=0-step={STEPS_PER_EPOCH}*.ckpt")
    return path


@pytest.mark.multiprocess
@pytest.mark.parametrize("strategy", list(CASES))
def test_strategy_trains_with_routed_optimizer_exact_ledger_and_exact_resume(tmp_path, strategy):
    optimizer_class, reason = CASES[strategy]
    extra_config = {"shard_module_classes": ["Linear"]} if strategy == "fsdp" else {}
    config = dict(SIZES, strategy=strategy, checkpoint_every_n_epochs=1, **extra_config)

    summary = run_fit(tmp_path, **config)
    extra = _extra(tmp_path)

    # The ledger: planned == taken == scheduler steps, and linear-to-zero lands on 0.
    assert summary["micro_batches_per_epoch_per_rank"] == 13
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == PLANNED_STEPS
    assert extra["global_step"] == PLANNED_STEPS
    assert summary["lr"]["after_last_scheduler_step"] == 0.0 and summary["lr"]["peak"] == 0.01
    assert summary["completed"] is True

    # The routed optimizer, as reported and as built.
    assert summary["optimizer"] == extra["optimizer_class"] == optimizer_class
    assert reason in summary["optimizer_reason"]

    # No-weight-decay grouping survived the strategy, each group on the schedule.
    assert [g["weight_decay"] for g in extra["param_groups"]] == [0.01, 0.0]
    assert [g["lr"] for g in extra["param_groups"]] == [0.0, 0.0]
    rows = _lr_rows(tmp_path)
    assert (tmp_path / "lr.csv").read_text().startswith("step,lr,lr_group1,grad_norm\n") and len(rows) == 1 + PLANNED_STEPS
    assert all(row.split(",")[1] == row.split(",")[2] for row in rows[1:])

    if strategy.startswith("deepspeed"):
        assert extra["strategy_class"] == "CPUDeepSpeedStrategy"
        assert extra["engine_global_steps"] == PLANNED_STEPS  # the engine's own count agrees
    if strategy == "fsdp":
        assert extra["strategy_class"] == "FSDP2Strategy"
        assert extra["sharded_modules"] == ["model", "model.0", "model.3"]  # root and both Linear blocks
        assert extra["dtensor_params"] == 6  # every parameter is a sharded DTensor
        assert extra["optimizer_defaults"]["fused"] is True

    # Resume from the end of epoch 1 in the same directory: the rest of the run is identical.
    first_rows, first_losses, first_norms = rows, extra["losses"], _grad_norms(tmp_path)
    resumed = run_fit(tmp_path, ckpt_path=str(_checkpoint_after_epoch_1(tmp_path)), **config)
    assert resumed["resumed_from"] is not None
    assert resumed["planned_total_steps"] == resumed["optimizer_steps"] == resumed["scheduler_steps"] == PLANNED_STEPS
    assert _lr_rows(tmp_path) == first_rows  # bitwise: the CSV holds repr() of every LR
    assert _grad_norms_close(_grad_norms(tmp_path), first_norms)
    resumed_losses = _extra(tmp_path)["losses"]
    expected = [loss for loss in first_losses if loss[0] == 1]
    assert [loss[:2] for loss in resumed_losses] == [loss[:2] for loss in expected]
    for (_, _, got), (_, _, want) in zip(resumed_losses, expected):
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.multiprocess
@pytest.mark.parametrize("strategy", ["deepspeed_stage_2", "fsdp"])
def test_a_run_stopped_after_epoch_1_and_resumed_equals_the_uninterrupted_run(tmp_path, strategy):
    # The parametrized test above resumes from an uninterrupted run's epoch-1 checkpoint; this
    # one really stops the run there (trainer.should_stop), then resumes it in its directory.
    config = dict(SIZES, strategy=strategy, checkpoint_every_n_epochs=1)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run_fit(whole, **config)
    partial = run_fit(stopped, stop_after_epochs=1, **config)
    assert partial["optimizer_steps"] == STEPS_PER_EPOCH and partial["completed"] is True
    resumed = run_fit(stopped, ckpt_path=str(_checkpoint_after_epoch_1(stopped)), **config)
    assert resumed["planned_total_steps"] == resumed["optimizer_steps"] == resumed["scheduler_steps"] == PLANNED_STEPS
    assert resumed["lr"]["after_last_scheduler_step"] == 0.0
    assert _lr_rows(stopped) == _lr_rows(whole)
    assert _grad_norms_close(_grad_norms(stopped), _grad_norms(whole))
    expected = [loss for loss in _extra(whole)["losses"] if loss[0] == 1]
    got = _extra(stopped)["losses"]
    assert [loss[:2] for loss in got] == [loss[:2] for loss in expected]
    for (_, _, g), (_, _, w) in zip(got, expected):
        assert math.isclose(g, w, rel_tol=1e-5, abs_tol=1e-6)
