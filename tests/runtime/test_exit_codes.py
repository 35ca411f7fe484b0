"""A fit stopped by SIGTERM/SIGUSR1 exits 75 at every moment once flashdist's handlers are in.

Each fit pauses at the moment under test (the script writes ``at-<moment>`` and waits); the
test signals, then writes ``signalled`` so the fit goes on: no sleeps, no timing windows.
One process, except the sanity check, which is signalled on rank 0 of 2 (Lightning's launcher:
the process the test signals is the one a job manager reads the exit code of); the repeated
SIGUSR1 case is the training-step case.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from flashdist.runtime.manifest import read_manifest
from flashdist.runtime.preemption import EXIT_PREEMPTED
from flashdist.runtime.trust import verify
from tests.runtime import harness

# One process, 2 epochs of 16 steps, validation (and a sanity check) on 2 batches, a checkpoint per epoch.
CONFIG = dict(devices=1, val_batches=2, checkpoint_every_n_epochs=1)
# Only an upper bound on waiting for an event (never a window): a 2-process fit took over 120 s to
# reach its sanity check on the shared 2-core machine at a load of 17, and over 300 s at 20.
WAIT_S = 600


def _signal_at(root: Path, moment: str, signum: int, devices: int = 1, **pause) -> tuple[int, str]:
    root.mkdir(parents=True)
    proc = harness.start(root, pause_at={"moment": moment, **pause}, **{**CONFIG, "devices": devices})
    harness.wait_for(lambda: (root / f"at-{moment}").exists(), timeout_s=WAIT_S, proc=proc)
    proc.send_signal(signum)
    (root / "signalled").write_text("")
    output = proc.communicate(timeout=WAIT_S)[0]
    return proc.returncode, output


def _assert_preempted_after_the_signal(root: Path, moment: str, ranks: int = 1) -> None:
    preempted = harness.ckpt(root, "preempted-step=*.ckpt")
    step = int(preempted.stem.split("=")[1])
    signalled_at = int((root / f"at-{moment}").read_text())
    if ranks == 1:
        assert step == signalled_at + 1  # stopped at the first optimizer-step boundary after the signal
    else:  # at the first boundary where the ranks' stop vote (non-blocking, runtime/preemption.py) agrees
        assert step >= signalled_at + 1
    assert read_manifest(preempted) is not None and verify(preempted) == []
    summary = harness.summary(root)
    assert summary["preempted"] and not summary["completed"] and summary["optimizer_steps"] == step
    assert summary["world_size"] == ranks


@pytest.mark.parametrize(
    ("moment", "signum", "devices"),
    [
        ("setup", signal.SIGTERM, 1),
        pytest.param("sanity", signal.SIGTERM, 2, marks=pytest.mark.multiprocess),  # rank 0 of 2
        ("validation", signal.SIGTERM, 1),  # the validation after epoch 0 (step 16)
        ("save", signal.SIGUSR1, 1),  # inside the end-of-epoch-0 checkpoint save
    ],
)
def test_a_signal_at_each_moment_exits_75_with_a_verified_checkpoint_of_the_step_it_stopped_at(tmp_path, moment, signum, devices):
    root = tmp_path / "run"
    returncode, output = _signal_at(root, moment, signum, devices=devices)
    assert returncode == EXIT_PREEMPTED, output[-4000:]
    _assert_preempted_after_the_signal(root, moment, ranks=devices)


def test_a_sigusr1_in_a_training_step_then_a_repeated_one_after_the_checkpoint_still_exits_75(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    proc = harness.start(root, pause_at={"moment": "train_step", "step": 2}, **CONFIG)
    harness.wait_for(lambda: (root / "at-train_step").exists(), timeout_s=WAIT_S, proc=proc)
    proc.send_signal(signal.SIGUSR1)
    (root / "signalled").write_text("")
    checkpoints = root / "checkpoints"
    harness.wait_for(lambda: any(checkpoints.glob("preempted-step=*.ckpt.manifest.json")), timeout_s=WAIT_S, proc=proc)
    proc.send_signal(signal.SIGUSR1)  # while the stop is pending: after the save, before the exit
    output = proc.communicate(timeout=WAIT_S)[0]
    assert proc.returncode == EXIT_PREEMPTED, output[-4000:]
    assert harness.ckpt(root, "preempted-step=*.ckpt").name == "preempted-step=3.ckpt"
    _assert_preempted_after_the_signal(root, "train_step")
