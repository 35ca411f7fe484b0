"""FSDP2 sharded checkpoints (torch DCP) resumed on another number of ranks: 2 → 1 and 1 → 2.

DCP reshards on load; flashdist's manifest covers the directory (each rank checks the shards it
owns), and the policy adapts the schedule. The LR trace is checked against the policy's arithmetic
with the uninterrupted DDP runs of the same schedule (FSDP2's fused AdamW keeps the LR as a float32
tensor, so its values equal those to float32 precision).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flashdist.runtime.manifest import read_manifest
from tests.runtime import harness

pytestmark = pytest.mark.multiprocess
EPOCH0 = "epoch=0-*.ckpt"


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory) -> dict[int, Path]:
    runs = {}
    for ranks in (2, 1):
        root = tmp_path_factory.mktemp(f"fsdp{ranks}")
        summary = harness.fit_ok(root, strategy="fsdp", devices=ranks, checkpoint_every_n_epochs=1)
        assert summary["optimizer_steps"] == summary["planned_total_steps"] == 32 // ranks
        runs[ranks] = root
    return runs


def _resume(run: Path, tmp_path: Path, devices: int, policy: str):
    root = harness.copy_run(run, tmp_path / "run")
    (root / "summary.json").unlink()
    checkpoint = harness.ckpt(root, EPOCH0)
    assert any(name.endswith(".distcp") for name in read_manifest(checkpoint).files)
    proc = harness.fit(root, strategy="fsdp", devices=devices, resume_policy=policy, ckpt_path=str(checkpoint))
    assert proc.returncode == 0, proc.stderr[-6000:]
    return harness.summary(root), harness.lrs(root)


def test_fsdp2_2_to_1_rank_keep_schedule_keeps_every_lr(fsdp_runs, uninterrupted_2ranks, tmp_path):
    summary, lrs = _resume(fsdp_runs[2], tmp_path, devices=1, policy="keep_schedule")
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 16 and summary["completed"]
    assert lrs == pytest.approx(uninterrupted_2ranks.lrs, rel=1e-6, abs=1e-12)


def test_fsdp2_1_to_2_ranks_rescale_keeps_the_lr_curve_over_samples(fsdp_runs, uninterrupted_1rank, tmp_path):
    summary, lrs = _resume(fsdp_runs[1], tmp_path, devices=2, policy="rescale")
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 24 and summary["schedule_total_steps"] == 16
    assert lrs[16:] == pytest.approx(uninterrupted_1rank.lrs[16::2], rel=1e-6, abs=1e-12)
