"""Elastic shrink: ``flashdist launch --nnodes 1:2`` with two agents on one host, one killed mid-run.

The survivor's worker loses its peer, torchrun restarts it (``--max-restarts 1``) in a group of
one node, and the fit resumes from the newest verified checkpoint under
``resume_policy="keep_global_batch"``: accumulation 1 → 2, the same 16 steps and LRs.
The kill waits for an event (the step-4 checkpoint's manifest), not for a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.launch.launchers import CHILD_ENV, REPO, flashdist_cli, free_port
from tests.runtime import harness

pytestmark = pytest.mark.multiprocess


def _process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *[p for child in children for p in _process_tree(int(child))]]


def _expected_lrs(total_steps: int = 16, warmup_steps: int = 2, lr: float = 0.01) -> list[float]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    out = []
    for _ in range(total_steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_one_of_two_agents_killed_the_survivor_resumes_alone_with_the_same_global_batch(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    config = {"root": str(root), "devices": 1, "checkpoint_every_n_steps": 4, "step_sleep_s": 0.3, "resume_policy": "keep_global_batch"}
    endpoint = f"127.0.0.1:{free_port()}"
    agents = []
    for node_rank in (0, 1):
        args = ["launch", "--nnodes", "1:2", "--nproc-per-node", "1", "--node-rank", str(node_rank), "--rdzv-endpoint", endpoint,
                "--rdzv-id", f"elastic-{tmp_path.name}", "--rdzv-timeout", "90", "--max-restarts", "1", "--local-addr", "127.0.0.1",
                "--", "tests/runtime/fit_reliable.py", json.dumps(config)]  # fmt: skip
        env = {**os.environ, **CHILD_ENV}
        agents.append(subprocess.Popen([*flashdist_cli(), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=env, start_new_session=True))
    try:
        harness.wait_for(lambda: any((root / "checkpoints").glob("*step=4.ckpt.manifest.json")), timeout_s=240, proc=agents[0])
        for pid in _process_tree(agents[1].pid):  # the whole node: agent, torchrun, worker
            os.kill(pid, signal.SIGKILL)
        output = agents[0].communicate(timeout=300)[0]
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
    assert agents[0].returncode == 0, output[-6000:]
    assert "flashdist: restart: resuming from" in output
    assert "accumulate_grad_batches 1 → 2 (global batch 16 = 8 × 2 × 1 ranks; saved on 2)" in output
    summary = harness.summary(root)
    assert summary["completed"] and summary["world_size"] == 1 and summary["resume_adapted_by"] == "keep_global_batch"
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 16
    assert harness.lrs(root) == pytest.approx(_expected_lrs(), rel=1e-12)
