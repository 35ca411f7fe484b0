"""``flashdist plan --resume-from``: verification, the saved identity and each policy's decision, launching nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flashdist.runtime.checkpoint import AtomicCheckpointIO

REPO = Path(__file__).resolve().parents[2]
# What ResumeGuard saves in a 2-rank run of 128 samples, batch 8, 2 epochs, 10 % warmup, at step 8.
RESUME_STATE = {
    "identity": {
        "planned_total_steps": 16, "warmup_steps": 2, "global_batch_size": 16, "data_parallel_size": 2,
        "accumulate_grad_batches": 1, "optimizer": "adamw()", "lr_scheduler": "linear_schedule_with_warmup(num_warmup_steps=0.1)",
        "learning_rate": 0.01,
    },
    "schedule": {"total_steps": 16, "step_args": [["num_training_steps", 16], ["num_warmup_steps", 2]], "global_batch_size": 16,
                 "update_offset": 0, "policy": None},
    "position": {"epoch": 1, "samples_done": 0},
}


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints" / "epoch=0-step=8.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 8, "callbacks": {"ResumeGuard": RESUME_STATE}}, path)
    return path


def _plan(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from flashdist.cli.main import main; rc = main(sys.argv[1:]); " \
           "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr); sys.exit(rc)"
    return subprocess.run([sys.executable, "-c", code, "plan", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_resume_dry_run_prints_verification_identity_and_each_policys_decision(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    proc = _plan("--resume-from", str(checkpoint), "--dataset-size", "128", "--max-epochs", "2", "--devices", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verified"] and report["saved_global_step"] == 8
    assert report["saved_identity"]["data_parallel_size"] == 2
    assert report["new_plan"]["data_parallel_size"] == 1 and report["new_plan"]["planned_total_steps"] == 32
    decisions = report["decisions"]
    assert "refused" in decisions["strict"] and "data_parallel_size: 2 → 1" in decisions["strict"]["refused"]
    assert (decisions["keep_schedule"]["position"], decisions["keep_schedule"]["total_steps"]) == (8, 16)
    # rescale: global batch 16 → 8 doubles the steps: step 16 of 32, warmup 4
    assert (decisions["rescale"]["position"], decisions["rescale"]["total_steps"]) == (16, 32)
    assert decisions["rescale"]["step_args"] == {"num_training_steps": 32, "num_warmup_steps": 4}
    # keep_global_batch: accumulation 2 on 1 rank, the saved 16 steps
    assert decisions["keep_global_batch"]["accumulate_grad_batches"] == 2
    assert (decisions["keep_global_batch"]["position"], decisions["keep_global_batch"]["total_steps"]) == (8, 16)
    assert "launch" not in proc.stderr.lower()


def test_resume_dry_run_reports_a_damaged_checkpoint_and_an_infeasible_global_batch(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    with checkpoint.open("r+b") as handle:
        handle.truncate(10)
    proc = _plan("--resume-from", str(checkpoint), "--dataset-size", "128", "--max-epochs", "2", "--devices", "3")
    assert proc.returncode == 1
    assert "verification        FAILED" in proc.stdout and "size 10 bytes" in proc.stdout
    assert "keep_global_batch  refused: resume_policy='keep_global_batch' cannot keep the saved global batch of 16" in proc.stdout
    assert "(devices × nodes = 2, accumulate_grad_batches=1, batch_size=8)" in proc.stdout


def test_a_plain_plan_still_imports_no_torch(tmp_path):
    proc = _plan("--dataset-size", "128", "--batch-size", "8", "--devices", "2")
    assert proc.returncode == 0 and "NO_TORCH" in proc.stderr
