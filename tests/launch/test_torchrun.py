"""`flashdist launch` under real torchrun: one node, two nodes on one host, a failed rendezvous,
and a config that disagrees with the launcher; the same config without a launcher as the baseline."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.launch.checks import checking_processes
from tests.launch.launchers import CHECKED_YAML, CHILD_ENV, PLANNED_STEPS, REPO, RUN_YAML, describe, fit_command, flashdist_cli, free_port, read_lr, read_summary, run_cli

@pytest.mark.multiprocess
def test_launch_two_processes_world_size_two(reference_run):
    summary = read_summary(reference_run)
    assert summary["world_size"] == 2 and summary["data_parallel_size"] == 2 and summary["num_nodes"] == 1
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == PLANNED_STEPS
    assert len(read_lr(reference_run)) == PLANNED_STEPS + 1  # header + one row per step
    assert summary["planned_total_steps"] == planned(devices=2)["planned_total_steps"]
    # flashdist launch's check process ran the pre-launch checks; the two workers it vouched for did not
    assert len(checking_processes(reference_run)) == 1


def planned(**cluster) -> dict:
    """`flashdist plan --config run.yaml` for a hypothetical cluster: what every launcher must agree with."""
    proc = run_cli(["plan", "--config", str(RUN_YAML), "--json", *[f"--{k.replace('_', '-')}={v}" for k, v in cluster.items()]], timeout_s=60)
    assert proc.returncode == 0, describe(proc)
    return json.loads(proc.stdout)


@pytest.mark.multiprocess
def test_the_same_config_without_a_launcher_plans_and_steps_the_same(tmp_path, reference_run):
    proc = run_cli(fit_command(tmp_path, "--config", str(CHECKED_YAML))[1:], timeout_s=240)  # Lightning starts the second process itself
    assert proc.returncode == 0, describe(proc)
    assert len(checking_processes(tmp_path)) == 1  # rank 0 checked before starting rank 1, which did not check again
    summary = read_summary(tmp_path)
    assert summary["world_size"] == 2 and summary["num_nodes"] == 1
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == PLANNED_STEPS
    assert read_lr(tmp_path) == read_lr(reference_run)


@pytest.mark.multiprocess
def test_two_nodes_on_one_host_divide_the_data(tmp_path, reference_run):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for node_rank in (0, 1):
        args = ["launch", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node_rank), "--rdzv-endpoint", endpoint,
                "--rdzv-id", f"two-nodes-{tmp_path.name}", "--rdzv-timeout", "90", "--local-addr", "127.0.0.1", "--"]  # fmt: skip
        command = fit_command(tmp_path, "--trainer.devices=auto", "--trainer.num_nodes=2")
        env = {**os.environ, **CHILD_ENV}
        nodes.append(subprocess.Popen([*flashdist_cli(), *args, *command], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-6000:]
    summary = read_summary(tmp_path)
    assert summary["num_nodes"] == 2 and summary["devices"] == 1
    assert summary["world_size"] == summary["data_parallel_size"] == 2
    # 400 samples over 2 ranks on 2 nodes: 200 each, 25 batches of 8 per epoch, as on one node with 2 processes
    assert summary["micro_batches_per_epoch_per_rank"] == 25
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == PLANNED_STEPS
    assert summary["planned_total_steps"] == read_summary(reference_run)["planned_total_steps"] == planned(num_nodes=2, devices=1)["planned_total_steps"]


@pytest.mark.multiprocess
def test_unreachable_rendezvous_fails_within_the_timeout_with_a_message(tmp_path):
    # node 1 of 2, pointed at a port where no node 0 listens: it must give up, not wait. A script
    # (not `flashdist fit`, which flashdist launch would check first): no worker ever starts.
    started = time.monotonic()
    proc = run_cli(["launch", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-timeout", "5", "--",
                    "tests/scripts/fit_tiny.py", json.dumps({"root": str(tmp_path)})], timeout_s=120)  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, describe(proc)
    assert "flashdist launch: the rendezvous at 127.0.0.1:" in proc.stderr and "HINT:" in proc.stderr, describe(proc)
    assert elapsed < 90, f"took {elapsed:.0f}s to fail"
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.multiprocess
def test_config_that_disagrees_with_torchrun_is_one_config_error_before_torchrun_starts(tmp_path):
    # run.yaml asks for 2 devices; --nproc-per-node 1. flashdist launch runs flashdist fit's checks
    # in one process that sees torchrun's topology, before starting torchrun.
    proc = run_cli(["launch", "--nproc-per-node", "1", "--rdzv-timeout", "60", "--", *fit_command(tmp_path)], timeout_s=180)
    message = "asks for 2 process(es) per node, but torchrun started 1 per node"
    assert proc.returncode == 2 and proc.stderr.count(message) == 1 and "HINT:" in proc.stderr, describe(proc)
    assert "--rdzv-backend" not in proc.stdout + proc.stderr  # torchrun's command was never printed, nor run
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nnodes", "2", "--", "x.py"], "--nnodes 2 needs --rdzv-endpoint"),
        (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1", "--", "x.py"], "--node-rank 2 is outside --nnodes 2"),
        (["--nproc-per-node", "0", "--", "x.py"], "--nproc-per-node 0 must be a positive integer"),
        (["--rdzv-endpoint", "nohostport", "--", "x.py"], "is not HOST:PORT"),
        (["--max-restarts", "-1", "--", "x.py"], "--max-restarts -1 is negative"),
        (["--nproc-per-node", "2"], "no command to launch"),
    ],
)
def test_launch_refuses_bad_options_before_running_anything(args, message):
    proc = run_cli(["launch", *args], timeout_s=60)
    assert proc.returncode == 2 and message in proc.stderr and "torchrun" not in proc.stdout, describe(proc)


def test_dry_run_prints_the_exact_torchrun_command():
    proc = run_cli(["launch", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "node0:29400", "--max-restarts", "3", "--dry-run",
                    "--", "flashdist", "fit", "--config", "c.yaml"], timeout_s=60)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    line = proc.stdout.strip().splitlines()[-1]
    assert line.split()[0].endswith("torchrun")
    for part in ("--nproc-per-node 1", "--nnodes 2", "--node-rank 1", "--rdzv-backend c10d", "--rdzv-endpoint node0:29400", "--max-restarts 3",
                 "join_timeout=300", "--no-python"):  # fmt: skip
        assert part in line, line
    assert line.endswith("fit --config c.yaml")


def test_launch_reports_preemption_with_the_fits_own_exit_code():
    # flashdist launch stays light (no Lightning import), so it carries its own copy of the code
    from flashdist.runtime.preemption import EXIT_PREEMPTED
    from flashdist.launching import process

    assert process.EXIT_PREEMPTED == EXIT_PREEMPTED
    assert set(process.PREEMPTION_SIGNALS) <= set(process.FORWARDED_SIGNALS)


BAD_BATCH = {"zero_optimization": {"stage": 2}, "train_batch_size": 999}
# run.yaml: batch 8 per rank, 2 ranks, no accumulation: a global batch of 16, known before launch.
BAD_BATCH_MESSAGE = "train_batch_size=999 contradicts batch_size × accumulate_grad_batches × data-parallel size = 16"


@pytest.mark.multiprocess
def test_under_plain_torchrun_a_config_error_is_printed_by_rank_zero_only(tmp_path):
    import sys
    from pathlib import Path

    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps(BAD_BATCH))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    command = [*torchrun, "--no-python", *flashdist_cli(), *fit_command(tmp_path, f"--trainer.strategy={bad}")[1:]]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, **CHILD_ENV})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and output.count(BAD_BATCH_MESSAGE) == 1, describe(proc)
    assert "exitcode  : 2" in output  # both workers failed with flashdist's config-error status (torchrun's report)
    assert not Path(tmp_path, "summary.json").exists()


USER_SCRIPT = """
import flashdist
from flashdist.image import ImageClassifier

ImageClassifier(num_classes=4, backbone="resnet_tiny", optimizer=("adamm", {}))
print("not reached")
"""


@pytest.mark.multiprocess
def test_a_config_error_in_a_users_script_under_launch_is_one_line_from_rank_zero_and_status_two(tmp_path):
    # Both ranks build the same Task and both find the typo; rank 0 alone says it, as one line
    # with its hint and no traceback, and the job ends with flashdist's config-error status.
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT)
    proc = run_cli(["launch", "--nproc-per-node", "2", "--rdzv-timeout", "60", "--", str(script)], timeout_s=240)
    error_lines = [line for line in proc.stderr.splitlines() if "'adamm'" in line]
    assert proc.returncode == 2, describe(proc)
    assert len(error_lines) == 1 and error_lines[0].startswith("flashdist: error: ") and "HINT:" in error_lines[0], describe(proc)
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr and "not reached" not in proc.stdout, describe(proc)


def test_a_job_ends_on_a_config_error_when_the_first_failure_is_one_and_the_rest_were_stopped_or_quiet():
    from flashdist.launching.agent import is_config_error_exit

    assert is_config_error_exit(2, [2, 2]) and is_config_error_exit(2, [2, -15])  # -15: stopped by the agent on its way
    assert not is_config_error_exit(2, [2, 1]) and not is_config_error_exit(-9, [2, -9]) and not is_config_error_exit(1, [1])
