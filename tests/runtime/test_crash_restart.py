"""torchrun --max-restarts 1: rank 0 is SIGKILLed mid-epoch *while writing a checkpoint*.

One run covers: a worker crash mid-epoch, a kill -9 mid-checkpoint-write (the partial is
ignored, "last" still names the previous complete checkpoint), the group restart, automatic
resume, the whole-run lr.csv, and every sample seen once per epoch. The checkpoints are
asynchronous (``async_checkpoint=True``): the kill hits the background writer inside
``torch.save`` once the training thread has gone on past that save (an event, not a delay);
a synchronous kill mid-write is tests/runtime/test_atomic_checkpoints.py's.
"""

from __future__ import annotations

import pytest

from tests.runtime import harness
from tests.runtime.test_preemption import assert_each_sample_once_per_epoch

pytestmark = pytest.mark.multiprocess


def test_worker_killed_during_checkpoint_write_restarts_and_resumes_from_last_complete(uninterrupted_2ranks, tmp_path):
    root = tmp_path / "run"
    # Without flashdist's per-attempt rendezvous prefix (runtime/checkpoint.py), this restart failed
    # on a quiet machine every time: gloo read attempt 0's addresses from torchrun's reused store.
    proc = harness.torchrun(
        root, nproc=2, max_restarts=1, record_samples=True, checkpoint_every_n_steps=3,
        kill_in_save_at_step={"step": 6, "rank": 0}, collective_timeout_s=60, async_checkpoint=True,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "exitcode: -9" in proc.stderr and "local_rank: 0" in proc.stderr  # the kill really happened
    # last.ckpt of step 6 came while epoch=0-step=6.ckpt was still being written: one save in flight, said so
    assert "checkpoint last.ckpt waits for epoch=0-step=6.ckpt, still being written in the background" in proc.stderr
    assert "restart: resuming from" in proc.stderr and "last.ckpt (ignoring incomplete: .epoch=0-step=6.ckpt.partial)" in proc.stderr

    summary = harness.summary(root)
    assert summary["completed"] and summary["resumed_from"].endswith("last.ckpt")
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == summary["scheduler_steps"] == 16
    assert harness.lrs(root) == uninterrupted_2ranks.lrs
    # every update's grad norm too (lr.csv's last column): the resumed weights and optimizer state are exact
    assert (root / "lr.csv").read_text() == (uninterrupted_2ranks.root / "lr.csv").read_text()

    records = harness.samples(root)
    assert min(r["step"] for r in records if r["attempt"] > 0) == 4, "resumed after step 3, the last complete checkpoint"
    assert_each_sample_once_per_epoch(records, resumed_at_step=3)
