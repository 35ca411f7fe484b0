"""A user's own SLURM script that resumes a requeued job with ``ckpt_path="hpc"``, on the real one-host cluster.

The script is what a Lightning user writes (``#SBATCH --requeue``, ``srun python train.py``, and
``ckpt_path="hpc" if requeued else None``): ``scancel --signal=USR1`` reaches the fit, flashdist's
handler (which replaces Lightning's) saves ``preempted-step=<N>.ckpt`` where Lightning would have
saved ``hpc_ckpt_<N>.ckpt`` and requeues the job; the requeued job's ``"hpc"`` must find that
checkpoint, verify it and continue the schedule exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.launch.launchers import CHILD_ENV, REPO, TERMINAL_STATES, job_info, wait_for_job
from tests.runtime import harness

pytestmark = [pytest.mark.slurm, pytest.mark.multiprocess]

DATASET, BATCH, EPOCHS, WARMUP_STEPS, LR = 64, 8, 2, 4, 0.01
TOTAL_STEPS = EPOCHS * DATASET // BATCH  # one task: 8 steps per epoch
PAUSE_STEP = 3


def _expected_lr(update: int) -> float:
    """HF's linear warmup to zero at scheduler position ``update`` − 1: the uninterrupted run's LR of that update."""
    t = update - 1
    return LR * (t / WARMUP_STEPS if t < WARMUP_STEPS else max(0.0, (TOTAL_STEPS - t) / (TOTAL_STEPS - WARMUP_STEPS)))


def test_a_requeued_job_resumes_with_ckpt_path_hpc_from_the_preemption_checkpoint(slurm_cluster, tmp_path):
    root, log = tmp_path / "run", tmp_path / "job.log"
    config = {"root": str(root), "devices": 1, "dataset_size": DATASET, "batch_size": BATCH, "max_epochs": EPOCHS,
              "learning_rate": LR, "lr_scheduler": ["linear_schedule_with_warmup", {"num_warmup_steps": WARMUP_STEPS}],
              "record_samples": True, "checkpoint_every_n_epochs": 1, "pause_at_step": {"step": PAUSE_STEP},
              "ckpt_path_when_requeued": "hpc"}
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --job-name=flashdist-hpc", "#SBATCH --nodes=1", "#SBATCH --ntasks=1", "#SBATCH --partition=debug",
        "#SBATCH --time=00:10:00", "#SBATCH --requeue", "#SBATCH --open-mode=append", f"#SBATCH --output={log}", f"#SBATCH --error={log}",
        f"srun {sys.executable} {harness.SCRIPT} '{json.dumps(config)}'", "",
    ]))
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=60, cwd=REPO,
                               env={**harness._env(), **CHILD_ENV})
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.strip().split(";")[0])

    deadline = time.monotonic() + 180  # fit_reliable holds rank 0 after PAUSE_STEP until the test writes "go"
    while not (root / f"reached-step-{PAUSE_STEP}").exists():
        state = job_info(job_id).get("JobState")
        if state in TERMINAL_STATES or time.monotonic() > deadline:
            subprocess.run(["scancel", str(job_id)], capture_output=True)
            pytest.fail(f"job {job_id} never reached step {PAUSE_STEP} ({state}):\n{log.read_text()[-4000:] if log.exists() else ''}")
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", str(job_id)], check=True)
    (root / "go").write_text("")
    info = wait_for_job(job_id, timeout_s=300, log=log)
    output = log.read_text()
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) == 1, f"{info}\n{output[-6000:]}"

    # One process stops at the step boundary after the signal: step PAUSE_STEP + 1.
    preempted = root / "checkpoints" / f"preempted-step={PAUSE_STEP + 1}.ckpt"
    assert f"rank 0: preempted (signal {int(signal.SIGUSR1)}); saved {preempted} at step {PAUSE_STEP + 1}" in output, output[-6000:]
    assert f"flashdist: requeued SLURM job {job_id}" in output
    assert f"flashdist: ckpt_path='hpc': resuming from {preempted}" in output, output[-6000:]
    summary = harness.summary(root)
    assert summary["completed"] and summary["resumed_from"] == str(preempted)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == TOTAL_STEPS
    assert harness.lrs(root) == pytest.approx([_expected_lr(u) for u in range(1, TOTAL_STEPS + 1)], rel=1e-6, abs=1e-12)
    records = harness.samples(root)
    assert [r["step"] for r in records] == list(range(1, TOTAL_STEPS + 1)), "each step once: none lost or trained twice"
    for epoch in range(EPOCHS):
        assert Counter(i for r in records if r["epoch"] == epoch for i in r["ids"]) == Counter(range(DATASET))
    assert not preempted.exists(), "the completed run deleted its preemption checkpoint"
