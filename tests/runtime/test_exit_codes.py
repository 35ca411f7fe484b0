"""A fit stopped by SIGTERM/SIGUSR1 exits 75 at every moment once flashdist's handlers are in.

Each fit pauses at the moment under test (the script writes ``at-<moment>`` and waits); the
test signals, then writes ``signalled`` so the fit goes on: no sleeps, no timing windows.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from flashdist.runtime.manifest import read_manifest
from flashdist.runtime.preemption import EXIT_PREEMPTED
from tests.runtime import harness

# One process, 2 epochs of 16 steps, validation (and a sanity check) on 2 batches, a checkpoint per epoch.
CONFIG = dict(devices=1, val_batches=2, checkpoint_every_n_epochs=1)


def _signal_at(root: Path, moment: str, signum: int, **pause) -> tuple[int, str]:
    root.mkdir(parents=True)
    proc = harness.start(root, pause_at={"moment": moment, **pause}, **CONFIG)
    harness.wait_for(lambda: (root / f"at-{moment}").exists(), timeout_s=120, proc=proc)
    proc.send_signal(signum)
    (root / "signalled").write_text("")
    output = proc.communicate(timeout=120)[0]
    return proc.returncode, output


@pytest.mark.parametrize(
    ("moment", "signum", "pause"),
    [
        ("setup", signal.SIGTERM, {}),
        ("sanity", signal.SIGTERM, {}),
        ("train_step", signal.SIGUSR1, {"step": 3}),
        ("validation", signal.SIGTERM, {}),  # the validation after epoch 0 (step 16)
        ("save", signal.SIGUSR1, {}),  # inside the end-of-epoch-0 checkpoint save
    ],
)
def test_a_signal_at_each_moment_exits_75_with_a_verified_checkpoint_of_the_next_step(tmp_path, moment, signum, pause):
    root = tmp_path / "run"
    returncode, output = _signal_at(root, moment, signum, **pause)
    assert returncode == EXIT_PREEMPTED, output[-4000:]
    preempted = harness.ckpt(root, "preempted-step=*.ckpt")
    step = int(preempted.stem.split("=")[1])
    signalled_at = int((root / f"at-{moment}").read_text())
    assert step == signalled_at + 1  # stopped at the first optimizer-step boundary after the signal
    assert read_manifest(preempted) is not None
    summary = harness.summary(root)
    assert summary["preempted"] and not summary["completed"] and summary["optimizer_steps"] == step


def test_a_repeated_sigusr1_after_the_checkpoint_is_absorbed_and_the_exit_is_still_75(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    proc = harness.start(root, pause_at={"moment": "train_step", "step": 2}, **CONFIG)
    harness.wait_for(lambda: (root / "at-train_step").exists(), timeout_s=120, proc=proc)
    proc.send_signal(signal.SIGUSR1)
    (root / "signalled").write_text("")
    checkpoints = root / "checkpoints"
    harness.wait_for(lambda: any(checkpoints.glob("preempted-step=*.ckpt.manifest.json")), timeout_s=120, proc=proc)
    proc.send_signal(signal.SIGUSR1)  # while the stop is pending: after the save, before the exit
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == EXIT_PREEMPTED, output[-4000:]
    assert harness.ckpt(root, "preempted-step=*.ckpt").name == "preempted-step=3.ckpt"
