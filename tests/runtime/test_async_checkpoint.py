"""Asynchronous checkpoints (runtime/async_checkpoint.py), in one process: the background writer is
held inside ``torch.save`` by an object that waits for the test's event, so every state in
between is looked at, never raced against. The multi-process cases (kill -9 during an
asynchronous DDP save, FSDP2's ``dcp.async_save`` and resume) are in test_crash_restart.py and
test_resharded_resume.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import flashdist
from flashdist import ConfigError
from flashdist.runtime.async_checkpoint import AsyncAtomicCheckpointIO
from flashdist.runtime.checkpoint import find_resume_checkpoint
from flashdist.runtime.trust import verify


class HoldsTheWriter:
    """Pickled by the background writer: says so, then waits until the test releases it."""

    def __init__(self, fail: bool = False):
        self.inside, self.release, self.fail = threading.Event(), threading.Event(), fail

    def __reduce__(self):
        self.inside.set()
        assert self.release.wait(timeout=60), "the test never released the writer"
        if self.fail:
            raise OSError("disk full")
        return (int, (0,))


def _io(said: list[str]) -> AsyncAtomicCheckpointIO:
    io = AsyncAtomicCheckpointIO()
    io.writer._say = said.append
    return io


def test_a_save_returns_before_it_is_written_and_auto_sees_only_complete_checkpoints(tmp_path: Path):
    said: list[str] = []
    io = _io(said)
    io.save_checkpoint({"global_step": 1, "w": torch.zeros(4)}, tmp_path / "step=1.ckpt")
    io.wait()
    weights = torch.zeros(4)
    hold = HoldsTheWriter()
    io.save_checkpoint({"global_step": 2, "w": weights, "hold": hold}, tmp_path / "step=2.ckpt")
    assert hold.inside.wait(timeout=60)  # save_checkpoint returned; the writer is inside torch.save
    weights += 1  # training goes on and changes the live tensor: the snapshot must not see it

    assert not (tmp_path / "step=2.ckpt").exists() and (tmp_path / ".step=2.ckpt.partial").exists()
    assert find_resume_checkpoint([tmp_path]).name == "step=1.ckpt" and verify(tmp_path / "step=1.ckpt") == []

    hold.release.set()
    io.teardown()  # the end of a fit: waits for the save in flight
    saved = torch.load(tmp_path / "step=2.ckpt", weights_only=False)
    assert saved["global_step"] == 2 and saved["w"].tolist() == [0.0] * 4
    assert verify(tmp_path / "step=2.ckpt") == [] and find_resume_checkpoint([tmp_path]).name == "step=2.ckpt"
    assert said == []  # no save had to wait


def test_a_snapshot_reuses_the_previous_buffers_and_still_copies():
    from flashdist.runtime.async_checkpoint import snapshot

    live, buffers = {"w": torch.zeros(3), "step": 1}, []
    first = snapshot(live, reuse=buffers)
    reused = buffers[0]
    live["w"] += 1
    second = snapshot(live, reuse=buffers)
    assert second["w"] is reused and second["w"].tolist() == [1.0] * 3 and second["step"] == 1
    live["w"] += 1
    assert second["w"].tolist() == [1.0] * 3 and first["w"] is reused  # the buffer of the save that is complete


def test_one_save_in_flight_the_next_waits_and_says_so_and_removal_waits_for_the_newer_save(tmp_path: Path):
    said: list[str] = []
    io = _io(said)
    io.save_checkpoint({"global_step": 1}, tmp_path / "step=1.ckpt")
    io.wait()
    hold = HoldsTheWriter()
    io.save_checkpoint({"global_step": 2, "hold": hold}, tmp_path / "step=2.ckpt")
    assert hold.inside.wait(timeout=60)
    io.remove_checkpoint(tmp_path / "step=1.ckpt")  # ModelCheckpoint(save_top_k=1) drops the older one
    assert (tmp_path / "step=1.ckpt").exists()  # not before step=2.ckpt is complete

    waiter = threading.Thread(target=io.save_checkpoint, args=({"global_step": 3}, tmp_path / "step=3.ckpt"))
    waiter.start()
    while not said:  # the second save announces its wait before blocking
        assert waiter.is_alive()
        waiter.join(timeout=0.01)
    assert said == ["flashdist: checkpoint step=3.ckpt waits for step=2.ckpt, still being written in the background"]
    assert waiter.is_alive() and not (tmp_path / ".step=3.ckpt.partial").exists()
    hold.release.set()
    waiter.join(timeout=60)
    io.teardown()
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["step=2.ckpt", "step=3.ckpt"]
    # each save's wait for the one before it (back-pressure) and its background write, recorded apart
    assert len(io.writer.waited_s) == len(io.writer.blocked_s) == len(io.writer.written_s) == 3
    assert all(waited <= blocked for waited, blocked in zip(io.writer.waited_s, io.writer.blocked_s))


def test_a_failed_background_save_is_raised_on_the_training_thread_and_keeps_the_older_checkpoint(tmp_path: Path):
    io = _io([])
    io.save_checkpoint({"global_step": 1}, tmp_path / "step=1.ckpt")
    hold = HoldsTheWriter(fail=True)
    io.save_checkpoint({"global_step": 2, "hold": hold}, tmp_path / "step=2.ckpt")
    io.remove_checkpoint(tmp_path / "step=1.ckpt")
    hold.release.set()
    with pytest.raises(RuntimeError, match="a background checkpoint save failed: OSError: disk full"):
        io.save_checkpoint({"global_step": 3}, tmp_path / "step=3.ckpt")
    io.teardown()
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["step=1.ckpt"] and verify(tmp_path / "step=1.ckpt") == []


def test_dcp_async_save_stages_a_copy_before_it_returns(tmp_path: Path):
    # The FSDP2 route relies on it: the tensors training changes after async_save returned are not the ones written.
    import torch.distributed.checkpoint as dcp

    from flashdist.runtime.async_checkpoint import _dcp_async_save, _stager

    weights, stager = torch.zeros(8), _stager()  # one stager for every save, as the FSDP2 route keeps it
    for value, name in ((0.0, "a"), (1.0, "b")):
        weights.fill_(value)
        upload = _dcp_async_save({"w": weights}, tmp_path / name, None, stager)
        weights += 10  # training goes on
        upload.result()
    stager.close()
    for value, name in ((0.0, "a"), (1.0, "b")):
        loaded = {"w": torch.empty(8)}
        dcp.load(loaded, checkpoint_id=tmp_path / name, no_dist=True)
        assert loaded["w"].tolist() == [value] * 8


def test_async_checkpoint_refusals_come_before_any_work():
    with pytest.raises(ConfigError, match=r"async_checkpoint='yes' must be True or False.*HINT"):
        flashdist.Trainer(accelerator="cpu", logger=False, async_checkpoint="yes")
    with pytest.raises(ConfigError, match=r"async_checkpoint=True with a DeepSpeed strategy.*HINT: drop async_checkpoint"):
        flashdist.Trainer(accelerator="cpu", strategy="deepspeed_stage_2", devices=1, logger=False, async_checkpoint=True)


def test_a_one_process_fit_with_async_checkpoints_ends_with_every_checkpoint_complete(tmp_path: Path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from flashdist.tasks.classification import ClassificationTask

    x = torch.randn(32, 4)
    task = ClassificationTask(torch.nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01)
    trainer = flashdist.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, async_checkpoint=True,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=2, save_top_k=1, monitor="step", mode="max")],
    )
    trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch=0-step=8.ckpt", "epoch=0-step=8.ckpt.manifest.json"]  # top-1 kept, the others removed after it
    assert verify(tmp_path / "checkpoints" / "epoch=0-step=8.ckpt") == []


def test_a_fit_that_raises_waits_for_the_save_in_flight(tmp_path: Path):
    from lightning.pytorch import Callback
    from torch.utils.data import DataLoader, TensorDataset

    from flashdist.tasks.classification import ClassificationTask

    hold = HoldsTheWriter()

    class SaveThenFail(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                trainer.save_checkpoint(tmp_path / "step=2.ckpt")  # held inside torch.save
            if trainer.global_step == 3:
                assert hold.inside.wait(timeout=60)
                raise RuntimeError("the user's bug")

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            checkpoint["hold"] = hold

        def on_exception(self, trainer, pl_module, exception):  # runs before flashdist's (user callbacks come first)
            hold.release.set()

    x = torch.randn(32, 4)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                                async_checkpoint=True, callbacks=[SaveThenFail()])
    task = ClassificationTask(torch.nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01)
    with pytest.raises(RuntimeError, match="the user's bug"):
        trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4))
    assert verify(tmp_path / "step=2.ckpt") == []  # written, hashed and renamed before fit raised
