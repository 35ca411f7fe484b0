"""Resume on another number of ranks: strict refuses, keep_schedule / rescale adapt as documented.

Each resume runs in a copy of the reference run's directory, from its end-of-epoch-0 checkpoint,
so lr.csv holds the whole run: rows of the first segment, then the resumed ones.
"""

from __future__ import annotations

import pytest

from tests.runtime import harness

pytestmark = pytest.mark.multiprocess


def _resume(reference, tmp_path, devices: int, policy: str, checkpoint: str):
    root = harness.copy_run(reference.root, tmp_path / "run")
    ckpt = harness.ckpt(root, checkpoint)
    return root, harness.fit(root, devices=devices, resume_policy=policy, ckpt_path=str(ckpt))


def test_baseline_uninterrupted_runs_plan_equals_taken(uninterrupted_2ranks, uninterrupted_1rank):
    assert uninterrupted_2ranks.summary["optimizer_steps"] == uninterrupted_2ranks.summary["planned_total_steps"] == 16
    assert uninterrupted_1rank.summary["optimizer_steps"] == uninterrupted_1rank.summary["planned_total_steps"] == 32
    assert len(uninterrupted_2ranks.lrs) == 16 and len(uninterrupted_1rank.lrs) == 32


def test_strict_refuses_a_changed_schedule_before_any_step(uninterrupted_2ranks, tmp_path):
    root, proc = _resume(uninterrupted_2ranks, tmp_path, devices=1, policy="strict", checkpoint="epoch=0-*.ckpt")
    assert proc.returncode != 0
    assert "ConfigError: resuming would change the LR schedule" in proc.stderr
    for change in ("planned_total_steps: 16 → 32", "warmup_steps: 2 → 4", "global_batch_size: 16 → 8", "data_parallel_size: 2 → 1"):
        assert change in proc.stderr
    assert "HINT:" in proc.stderr and "resume_policy='rescale'" in proc.stderr
    assert harness.lrs(root) == uninterrupted_2ranks.lrs  # nothing trained, the trace untouched


def test_keep_schedule_2_to_1_ranks_keeps_total_warmup_and_every_lr(uninterrupted_2ranks, tmp_path):
    root, proc = _resume(uninterrupted_2ranks, tmp_path, devices=1, policy="keep_schedule", checkpoint="epoch=0-*.ckpt")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = harness.summary(root)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == summary["scheduler_steps"] == 16
    assert summary["resume_adapted_by"] == "keep_schedule" and summary["completed"]
    assert harness.lrs(root) == uninterrupted_2ranks.lrs
    assert summary["lr"]["after_last_scheduler_step"] == 0.0


def test_rescale_2_to_1_ranks_keeps_the_lr_curve_over_samples(uninterrupted_2ranks, uninterrupted_1rank, tmp_path):
    root, proc = _resume(uninterrupted_2ranks, tmp_path, devices=1, policy="rescale", checkpoint="epoch=0-*.ckpt")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary, lrs = harness.summary(root), harness.lrs(root)
    # 8 updates of 16 samples, then 16 of 8: 256 samples, as configured; 24 real updates.
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 24 and summary["schedule_total_steps"] == 32
    assert lrs[:8] == uninterrupted_2ranks.lrs[:8]
    # update i of the 16-sample run starts at sample 16(i-1): the 1-rank run's update 2i-1.
    assert lrs[:8] == uninterrupted_1rank.lrs[0:16:2]
    assert lrs[8:] == uninterrupted_1rank.lrs[16:]
    assert summary["lr"]["after_last_scheduler_step"] == 0.0


def test_keep_schedule_1_to_2_ranks_runs_past_max_epochs_to_the_saved_total(uninterrupted_1rank, tmp_path):
    root, proc = _resume(uninterrupted_1rank, tmp_path, devices=2, policy="keep_schedule", checkpoint="epoch=0-*.ckpt")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = harness.summary(root)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 32
    assert harness.lrs(root) == uninterrupted_1rank.lrs


def test_rescale_1_to_2_ranks_keeps_the_lr_curve_over_samples(uninterrupted_1rank, uninterrupted_2ranks, tmp_path):
    root, proc = _resume(uninterrupted_1rank, tmp_path, devices=2, policy="rescale", checkpoint="epoch=0-*.ckpt")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary, lrs = harness.summary(root), harness.lrs(root)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 24 and summary["schedule_total_steps"] == 16
    assert lrs[:16] == uninterrupted_1rank.lrs[:16]
    assert lrs[16:] == uninterrupted_1rank.lrs[16::2] == uninterrupted_2ranks.lrs[8:]


def test_keep_schedule_1_to_2_ranks_with_onecycle_keeps_its_lr_defaults(tmp_path):
    # Lightning alone: OneCycleLR resumed on another topology crashes ("Tried to step 17 times").
    # Rebuilding it must take max_lr from the configured LR, not from initial_lr (= max_lr / 25).
    onecycle = dict(lr_scheduler=["OneCycleLR", {}], checkpoint_every_n_epochs=1)
    reference = tmp_path / "reference"
    harness.fit_ok(reference, devices=1, **onecycle)
    root = harness.copy_run(reference, tmp_path / "resumed")
    summary = harness.fit_ok(root, devices=2, resume_policy="keep_schedule", ckpt_path=str(harness.ckpt(root, "epoch=0-*.ckpt")), **onecycle)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 32
    assert harness.lrs(root) == harness.lrs(reference)
