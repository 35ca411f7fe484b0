"""SIGUSR1 / SIGTERM to a running 2-process fit: agreed stop, one checkpoint, exit 75, exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from flashdist.runtime.preemption import EXIT_PREEMPTED
from flashdist.runtime.trust import verify
from tests.runtime import harness




def _steps_recorded(root: Path, rank: int = 0) -> int:
    path = root / f"samples-rank{rank}.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _child_pid(pid: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    return int(children[0])


def assert_each_sample_once_per_epoch(records: list[dict], resumed_at_step: int, dataset_size: int = 128) -> None:
    """Updates that survive: the first attempt's up to the resumed checkpoint, then the resumed run's."""
    kept = [r for r in records if r["attempt"] > 0 or r["step"] <= resumed_at_step]
    for epoch in (0, 1):
        counts = Counter(i for r in kept if r["epoch"] == epoch for i in r["ids"])
        assert sorted(counts) == list(range(dataset_size)), f"epoch {epoch}: samples missing"
        assert set(counts.values()) == {1}, f"epoch {epoch}: {[i for i, c in counts.items() if c > 1]} seen twice"


@pytest.mark.multiprocess
def test_sigusr1_to_rank0_stops_both_ranks_at_one_step_then_auto_resume_is_exact(uninterrupted_2ranks, tmp_path):
    root = tmp_path / "run"
    config = dict(record_samples=True, checkpoint_every_n_epochs=1)
    proc = harness.start(root, pause_at_step={"step": 3, "rank": 0}, **config)
    # rank 0 only (paused after step 3): rank 1 learns it through the agreement
    harness.pause_and_signal(proc, root, 3, lambda: proc.send_signal(signal.SIGUSR1))
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_PREEMPTED, output[-4000:]

    preempted = harness.ckpt(root, "preempted-step=*.ckpt")
    step = int(preempted.stem.split("=")[1])
    # Signalled at step 3: the next vote carries it, the one after reads it. Votes are at most 2
    # steps apart this early (spacing doubles from 1 per vote), so the stop is mid-epoch 0.
    assert 3 < step < 8, "stopped mid-epoch 0, after the signal"
    assert f"rank 0: preempted (signal {int(signal.SIGUSR1)}); saved {preempted} at step {step}" in output
    assert f"rank 1: preempted (signal of another rank); saved {preempted} at step {step}" in output
    summary = harness.summary(root)
    assert summary["preempted"] and not summary["completed"] and summary["optimizer_steps"] == step
    assert _steps_recorded(root, 0) == _steps_recorded(root, 1) == step  # both finished the same step, no more

    # The same mid-epoch checkpoint, resumed on 1 rank (keep_schedule): the rest of epoch 0 is
    # dealt to the one rank, every sample once; the LR trace is the saved schedule's.
    elsewhere = harness.copy_run(root, tmp_path / "one_rank")
    moved = harness.fit(elsewhere, attempt=1, devices=1, resume_policy="keep_schedule", ckpt_path=str(elsewhere / "checkpoints" / preempted.name), **config)
    assert moved.returncode == 0, moved.stderr[-4000:]
    assert harness.summary(elsewhere)["optimizer_steps"] == harness.summary(elsewhere)["planned_total_steps"] == 16
    assert harness.lrs(elsewhere) == uninterrupted_2ranks.lrs
    first_attempt = [r for r in harness.samples(root) if r["step"] <= step]
    epoch0 = Counter(i for r in first_attempt + harness.samples(elsewhere) if r["epoch"] == 0 for i in r["ids"])
    assert sorted(epoch0) == list(range(128)) and set(epoch0.values()) == {1}

    proc = harness.fit(root, attempt=1, ckpt_path="auto", **config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"ckpt_path='auto': resuming from {preempted}" in proc.stderr
    summary = harness.summary(root)
    assert summary["completed"] and summary["resumed_from"] == str(preempted)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == summary["scheduler_steps"] == 16
    assert harness.lrs(root) == uninterrupted_2ranks.lrs  # same identity: every LR as uninterrupted
    assert_each_sample_once_per_epoch(harness.samples(root), resumed_at_step=step)
    assert not list((root / "checkpoints").glob("preempted-*")), "a completed run keeps no preemption checkpoint"

    again = harness.fit(root, attempt=2, ckpt_path="auto", **config)  # a completed run never resumes
    assert again.returncode != 0 and "already completed" in again.stderr
    assert harness.summary(root)["optimizer_steps"] == 16


@pytest.mark.multiprocess
def test_sigterm_to_rank1_only_stops_both_ranks_with_exit_75(tmp_path):
    root = tmp_path / "run"
    # asynchronous checkpoints: the preemption's save is in the background, and the exit waits for it
    proc = harness.start(root, record_samples=True, pause_at_step={"step": 2, "rank": 1}, async_checkpoint=True)
    harness.pause_and_signal(proc, root, 2, lambda: os.kill(_child_pid(proc.pid), signal.SIGTERM))
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_PREEMPTED, output[-4000:]
    preempted = harness.ckpt(root, "preempted-step=*.ckpt")
    assert verify(preempted) == [] and not list((root / "checkpoints").glob(".*"))  # complete, with its manifest
    step = int(preempted.stem.split("=")[1])
    assert f"rank 1: preempted (signal {int(signal.SIGTERM)})" in output
    assert f"rank 0: preempted (signal of another rank); saved {preempted} at step {step}" in output
    assert harness.summary(root)["optimizer_steps"] == step


def test_signal_handlers_are_the_process_own_again_after_a_fit(tmp_path):
    from torch.utils.data import DataLoader

    from tests.runtime.test_bad_input import _data, _task, _trainer

    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    _trainer(tmp_path, max_epochs=1).fit(_task(), DataLoader(_data(), batch_size=4))
    assert {s: signal.getsignal(s) for s in before} == before


def test_sigusr1_to_a_one_process_fit_stops_at_a_step_and_resumes_exactly(uninterrupted_1rank, tmp_path):
    """One process has no vote, so its per-step hook is off until a signal turns it on."""
    root = tmp_path / "run"
    config = dict(devices=1, record_samples=True, checkpoint_every_n_epochs=1)
    proc = harness.start(root, pause_at_step={"step": 3, "rank": 0}, **config)
    harness.pause_and_signal(proc, root, 3, lambda: proc.send_signal(signal.SIGUSR1))
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_PREEMPTED, output[-4000:]

    preempted = harness.ckpt(root, "preempted-step=*.ckpt")
    step = int(preempted.stem.split("=")[1])
    assert step == 4, "signalled during step 3: one process stops at the next step boundary"
    assert f"rank 0: preempted (signal {int(signal.SIGUSR1)}); saved {preempted} at step {step}" in output
    assert harness.summary(root)["optimizer_steps"] == _steps_recorded(root) == step

    resumed = harness.fit(root, attempt=1, ckpt_path="auto", **config)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = harness.summary(root)
    assert summary["completed"] and summary["optimizer_steps"] == summary["planned_total_steps"] == 32
    assert harness.lrs(root) == uninterrupted_1rank.lrs
