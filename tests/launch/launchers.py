"""Helpers for the launch tests: run the flashdist CLI, read a run's ledger, follow a SLURM job.

Every run here is ``flashdist fit --config tests/launch/run.yaml``, so the step plans of
`flashdist plan`, `flashdist launch`, two-node torchrun and SLURM can be compared: 400 samples,
batch 8, 2 epochs on 2 data-parallel ranks -> 25 micro-batches per rank per epoch, 50 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.fitting import free_port

REPO = Path(__file__).resolve().parents[2]
RUN_YAML = REPO / "tests" / "launch" / "run.yaml"
PACED_YAML = REPO / "tests" / "launch" / "paced.yaml"
CHECKED_YAML = REPO / "tests" / "launch" / "checked.yaml"  # the same data, recording who ran the pre-launch checks
LOCAL_CLUSTER = REPO / "slurm" / "local-cluster.sh"
SLURM_DIR = Path(os.environ.get("FLASHDIST_SLURM_DIR", "/tmp/flashdist-slurm"))
PLANNED_STEPS = 50  # 2 epochs x ceil(200 / 8) batches per rank
# jobs and torchrun workers import tests.launch.pacing; SLURM jobs inherit this environment
CHILD_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def flashdist_cli() -> list[str]:
    beside = Path(sys.executable).parent / "flashdist"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "flashdist.cli.main"]


def fit_overrides(root: Path, *extra: str) -> list[str]:
    return [f"--trainer.default_root_dir={root}", *extra]


def fit_command(root: Path, *extra: str) -> list[str]:
    """``flashdist fit --config run.yaml`` writing into ``root`` (``extra``: more overrides or --config layers)."""
    return ["flashdist", "fit", "--config", str(RUN_YAML), *fit_overrides(root, *extra)]


def run_cli(args: list[str], timeout_s: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``flashdist <args>`` from the repo root; output captured."""
    return subprocess.run(
        [*flashdist_cli(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **CHILD_ENV, **(env or {})}
    )


def read_summary(root: Path) -> dict:
    return json.loads((root / "summary.json").read_text())


def read_lr(root: Path) -> list[str]:
    """lr.csv's step and LR columns (the last column, grad_norm, is a float reduction, not part of the LR trace)."""
    lines = (root / "lr.csv").read_text().splitlines()
    if lines and lines[0].endswith(",grad_norm"):
        return [line.rsplit(",", 1)[0] for line in lines]
    return lines


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def job_info(job_id: int) -> dict[str, str]:
    proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    fields = {}
    for item in proc.stdout.split():
        key, _, value = item.partition("=")
        fields.setdefault(key, value)
    return fields


def wait_for_job(job_id: int, timeout_s: float, log: Path | None = None) -> dict[str, str]:
    """Poll until the job reaches a terminal state; cancel it and fail on timeout."""
    deadline = time.monotonic() + timeout_s
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if info.get("JobState") in TERMINAL_STATES:
            return info
        time.sleep(1)
    subprocess.run(["scancel", str(job_id)], capture_output=True)
    pytest.fail(f"job {job_id} still {info.get('JobState')} after {timeout_s}s; cancelled.\n{log.read_text()[-4000:] if log and log.exists() else ''}")


def submitted_job_id(stdout: str) -> int:
    lines = [line for line in stdout.splitlines() if line.startswith("Submitted batch job ")]
    assert lines, f"no job id printed:\n{stdout[-2000:]}"
    return int(lines[-1].split()[-1])


def job_logs(log_dir: Path, job_id: int) -> tuple[str, str]:
    out = next(log_dir.glob(f"*-{job_id}.out"), None)
    err = next(log_dir.glob(f"*-{job_id}.err"), None)
    return (out.read_text() if out else ""), (err.read_text() if err else "")
