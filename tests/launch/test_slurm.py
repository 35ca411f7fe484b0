"""`flashdist slurm` against a real one-host SLURM cluster (slurm/local-cluster.sh): a 2-task fit,
and a SIGUSR1 preemption that checkpoints, requeues and resumes without losing or repeating steps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launch.launchers import (
    PACED_YAML,
    PLANNED_STEPS,
    RUN_YAML,
    TERMINAL_STATES,
    describe,
    fit_overrides,
    job_info,
    job_logs,
    read_lr,
    read_summary,
    run_cli,
    submitted_job_id,
    wait_for_job,
)

CPU_JOB = ["--nodes", "1", "--gpus-per-node", "0", "--tasks-per-node", "2", "--partition", "debug", "--time", "00:10:00"]
PAUSE_STEP = 10  # paced.yaml's PauseAtStep(step=10)
ERROR_MARKERS = ("Traceback", "Error:", "error:")  # Python tracebacks, srun/slurmstepd errors


def submit(tmp_path: Path, overrides: list[str]) -> tuple[int, Path]:
    """`flashdist slurm --config run.yaml ... --submit -- <overrides>`: the job id and its log folder."""
    logs = tmp_path / "logs"
    args = ["slurm", "--config", str(RUN_YAML), *CPU_JOB, "--log-dir", str(logs), "--script-out", str(tmp_path / "job.sbatch"), "--submit"]
    proc = run_cli([*args, "--", *overrides], timeout_s=60)
    assert proc.returncode == 0, describe(proc)
    return submitted_job_id(proc.stdout), logs


@pytest.mark.slurm
@pytest.mark.multiprocess
def test_slurm_two_task_fit_plans_and_takes_the_same_steps(slurm_cluster, tmp_path):
    job_id, logs = submit(tmp_path, fit_overrides(tmp_path / "run"))
    info = wait_for_job(job_id, timeout_s=240, log=logs / f"flashdist-{job_id}.err")
    out, err = job_logs(logs, job_id)
    assert info["JobState"] == "COMPLETED", f"{info}\n{out[-3000:]}\n{err[-6000:]}"
    assert not [m for m in ERROR_MARKERS if m in out + err], f"job {job_id} output shows an error:\n{out[-3000:]}\n{err[-6000:]}"
    summary = read_summary(tmp_path / "run")
    assert summary["world_size"] == summary["data_parallel_size"] == 2 and summary["num_nodes"] == 1 and summary["devices"] == 2
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == PLANNED_STEPS


@pytest.mark.slurm
@pytest.mark.multiprocess
def test_slurm_preemption_requeues_and_resumes_on_the_same_schedule(slurm_cluster, tmp_path, reference_run):
    root = tmp_path / "run"
    job_id, logs = submit(tmp_path, ["--config", str(PACED_YAML), *fit_overrides(root)])
    # paced.yaml holds rank 0 after step PAUSE_STEP until it has received the signal
    reached = root / f"reached-step-{PAUSE_STEP}"
    deadline = time.monotonic() + 180
    while not reached.exists():
        state = job_info(job_id).get("JobState")
        if state in TERMINAL_STATES or time.monotonic() > deadline:
            subprocess.run(["scancel", str(job_id)], capture_output=True)
            out, err = job_logs(logs, job_id)
            pytest.fail(f"job {job_id} never reached step {PAUSE_STEP} ({state}):\n{out[-3000:]}\n{err[-6000:]}")
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", str(job_id)], check=True)
    info = wait_for_job(job_id, timeout_s=300, log=logs / f"flashdist-{job_id}.err")
    out, err = job_logs(logs, job_id)
    context = f"{info}\n--- out\n{out[-3000:]}\n--- err\n{err[-8000:]}"
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) == 1, context
    assert "restart 1" in out, context  # the template's banner, printed again by the requeued job
    summary = read_summary(root)
    assert summary["completed"] and summary["resumed_from"], summary  # the requeued run resumed from the preemption checkpoint
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == PLANNED_STEPS, summary
    assert summary["world_size"] == 2
    assert read_lr(root) == read_lr(reference_run), "the LR trace across the requeue differs from the uninterrupted run's"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "1:00"], "is not a time limit"),
        (["--time", "00:61:00"], "is not a time limit"),
        (["--time", "00:00:00"], "is zero"),
        (["--nodes", "0"], "--nodes 0 is not a count"),
        (["--gpus-per-node", "0", "--tasks-per-node", "0"], "--tasks-per-node 0 is not a count"),
        (["--gpus-per-node", "4", "--tasks-per-node", "2"], "flashdist runs one task per GPU"),
        (["--partition", "bad name"], "is not a SLURM name"),
    ],
)
def test_slurm_refuses_bad_input_before_writing_anything(tmp_path, args, message):
    options = {"--nodes": "1", "--gpus-per-node": "1", "--partition": "debug", "--time": "00:10:00"}
    options.update(zip(args[::2], args[1::2]))
    out = tmp_path / "job.sbatch"
    proc = run_cli(["slurm", *[part for pair in options.items() for part in pair], "--script-out", str(out), "--", "python", "t.py"], timeout_s=60)
    assert proc.returncode == 2 and message in proc.stderr, describe(proc)
    assert "HINT:" in proc.stderr or "Accepted:" in proc.stderr, describe(proc)
    assert not out.exists()


def test_slurm_script_from_config_has_one_task_per_device_and_requeue(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("trainer: {max_epochs: 1}\n")
    out = tmp_path / "job.sbatch"
    proc = run_cli(["slurm", "--config", str(config), "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--time", "1-00:00:00",
                    "--account", "proj", "--script-out", str(out), "--log-dir", str(tmp_path / "logs"), "--", "--trainer.max_steps=10"], timeout_s=60)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    script = out.read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4", "#SBATCH --time=1-00:00:00", "#SBATCH --account=proj",
                 "#SBATCH --requeue", "#SBATCH --signal=SIGUSR1@90", "#SBATCH --open-mode=append", "TORCH_NCCL_ASYNC_ERROR_HANDLING=1"):  # fmt: skip
        assert line in script, line
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert srun.endswith(f"fit --config {config} --trainer.max_steps=10"), srun
    assert script in proc.stdout  # shown as well as written


@pytest.mark.slurm
def test_srun_topology_reaches_the_trainer_and_a_disagreeing_config_is_refused(slurm_cluster):
    # The Trainer's first step (apply_launch_topology) in two real srun tasks; light enough to need no fit.
    probe = "from flashdist.launching.topology import apply_launch_topology as a; import sys, json; print(json.dumps(a(json.loads(sys.argv[1]))))"
    srun = ["srun", "--nodes=1", "--ntasks-per-node=2", "--job-name=flashdist-topology", sys.executable, "-c", probe]
    agree = subprocess.run([*srun, '{"devices": "auto"}'], capture_output=True, text=True, timeout=120)
    assert agree.returncode == 0, agree.stderr
    assert [json.loads(line) for line in agree.stdout.splitlines()] == [{"devices": 2, "num_nodes": 1}] * 2
    refused = subprocess.run([*srun, '{"devices": 1}'], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    # Under srun a ConfigError is one line from global rank 0 (runtime/said_once.py), no traceback.
    said = "flashdist: error: Trainer(devices=1) asks for 1 process(es) per node, but slurm started 2 per node"
    assert refused.stderr.count(said) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "--ntasks-per-node" in refused.stderr  # the hint names SLURM's side of the fix
