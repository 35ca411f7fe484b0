"""kill -9 during a real checkpoint write: the previous checkpoint stays loadable, the partial is ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from flashdist.runtime.checkpoint import AtomicCheckpointIO, find_resume_checkpoint, remove_partials
from tests.runtime.harness import REPO

WRITER = """
import sys, time, torch
from pathlib import Path
from flashdist.runtime.checkpoint import AtomicCheckpointIO

class StopsMidWrite:
    def __reduce__(self):  # runs while torch.save is writing the partial file
        Path(sys.argv[2]).write_text("writing")
        time.sleep(600)  # until the test kills this process

AtomicCheckpointIO().save_checkpoint({"global_step": 2, "blob": torch.ones(1024), "stop": StopsMidWrite()}, sys.argv[1])
"""


def test_kill9_mid_write_leaves_previous_checkpoint_and_last_intact(tmp_path: Path):
    directory = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, directory / "step=1.ckpt")
    io.save_checkpoint({"global_step": 1}, directory / "last.ckpt")

    target = directory / "last.ckpt"
    partial = directory / ".last.ckpt.partial"
    writing = tmp_path / "writing"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(writing)], cwd=REPO)
    deadline = time.monotonic() + 120
    while not writing.exists():  # the writer says it is inside torch.save, the partial file open
        assert writer.poll() is None, "the write finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    assert partial.exists()  # really cut mid-write
    assert torch.load(target, weights_only=False)["global_step"] == 1  # "last" is the complete old one
    assert find_resume_checkpoint([directory]).name == "last.ckpt"
    from lightning.pytorch.callbacks import ModelCheckpoint

    assert all(not Path(p).name.startswith(".") for p in ModelCheckpoint(dirpath=directory)._find_last_checkpoints(None))

    remove_partials(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["last.ckpt", "last.ckpt.manifest.json", "step=1.ckpt", "step=1.ckpt.manifest.json"]
