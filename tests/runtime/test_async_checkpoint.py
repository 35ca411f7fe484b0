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
from lightning.pytorch import LightningModule

import flashdist
from flashdist import ConfigError
from flashdist.runtime.async_checkpoint import AsyncAtomicCheckpointIO, background_writer
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


def test_dcp_async_save_stages_a_copy_that_later_changes_do_not_reach(tmp_path: Path):
    # The FSDP2 route relies on it: once the staging is complete, what training changes is not what is written.
    import torch.distributed.checkpoint as dcp

    from flashdist.runtime.async_sharded import _dcp_async_save, _stager

    weights, stager = torch.zeros(8), _stager()  # one stager for every save, as the FSDP2 route keeps it
    for value, name in ((0.0, "a"), (1.0, "b")):
        weights.fill_(value)
        upload, staging = _dcp_async_save({"w": weights}, tmp_path / name, None, stager)
        staging.result()  # what the next optimizer step waits for
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


class RawOptimizerStep(LightningModule):
    """Manual optimization that steps the torch optimizer itself, past Lightning's ``optimizer_step``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.automatic_optimization, self.model = False, model

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.optimizers().optimizer
        optimizer.zero_grad()
        self.manual_backward(torch.nn.functional.cross_entropy(self.model(x), y))
        optimizer.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("step", ["lightning", "raw"])
def test_an_fsdp2_step_during_the_staging_waits_for_it_and_the_checkpoint_holds_the_saved_steps_values(tmp_path: Path, monkeypatch, step):
    # FSDP2 (1 process, gloo): DCP's stager copies the shards on its own thread, held here until the
    # next optimizer step is waiting for it; the forward and backward ran meanwhile (BatchNorm's
    # running mean changed: buffers are copied before the save returns). "lightning": the Task's
    # step through Lightning's optimizer_step; "raw": a step on the torch optimizer itself.
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from lightning.pytorch import Callback
    from torch.distributed.checkpoint.staging import DefaultStager
    from torch.utils.data import DataLoader, TensorDataset

    import flashdist.runtime.async_sharded as async_sharded
    from flashdist.tasks.classification import ClassificationTask

    staging_inside, release, step_waits = threading.Event(), threading.Event(), threading.Event()
    make_stager = async_sharded._stager

    class HeldStager(DefaultStager):
        def _stage(self, state_dict, **kwargs):  # on the stager's thread
            staging_inside.set()
            assert release.wait(timeout=60), "the test never released the staging"
            return super()._stage(state_dict, **kwargs)

    def held_stager():
        stager = make_stager()
        stager.__class__ = HeldStager
        return stager

    monkeypatch.setattr(async_sharded, "_stager", held_stager)

    def full(tensors):
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in tensors.items()}

    seen: dict = {}

    class SaveAfterTwoSteps(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1:
                seen["saved"] = full(pl_module.state_dict())
                trainer.save_checkpoint(tmp_path / "step=2.ckpt")
                assert staging_inside.wait(timeout=60)  # save_checkpoint returned with the copy not made
                writer = background_writer(trainer.strategy)
                wait_for_staging = writer.wait_for_staging

                def observed_wait():
                    step_waits.set()
                    wait_for_staging()

                writer.wait_for_staging = observed_wait

                def release_once_the_step_waits():
                    seen["step_waited"] = step_waits.wait(timeout=60)
                    seen["at_the_wait"] = full(pl_module.state_dict())  # the forward ran, the update did not
                    release.set()

                threading.Thread(target=release_once_the_step_waits, daemon=True).start()
            if batch_idx == 2:
                seen["after"] = full(pl_module.state_dict())

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    task = ClassificationTask(model, num_classes=2, optimizer="sgd", learning_rate=0.1) if step == "lightning" else RawOptimizerStep(model)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, strategy="fsdp", max_epochs=1, limit_train_batches=3,
                                logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                                async_checkpoint=True, callbacks=[SaveAfterTwoSteps()])
    try:
        trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4))
    finally:
        release.set()
        if dist.is_initialized():
            dist.destroy_process_group()

    saved, at_the_wait, after = seen["saved"], seen["at_the_wait"], seen["after"]
    assert seen["step_waited"], "step 3 updated the parameters without waiting for the staging"
    weight, buffer = "model.0.weight", "model.1.running_mean"
    assert torch.equal(at_the_wait[weight], saved[weight]) and not torch.equal(at_the_wait[buffer], saved[buffer])
    assert not torch.equal(after[weight], saved[weight])  # step 3 did update, once the copy was made
    loaded = {"state_dict": {k: torch.empty_like(v) for k, v in saved.items()}}
    dcp.load(loaded, checkpoint_id=tmp_path / "step=2.ckpt", no_dist=True)
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in saved.items())  # step 2's values, buffers included
    assert verify(tmp_path / "step=2.ckpt") == []


def test_an_fsdp2_fit_releases_its_writer_stager_and_checkpoint_group(tmp_path: Path, monkeypatch):
    # A notebook trains Trainer after Trainer: each async FSDP2 fit used to leave an idle writer
    # thread, DCP's stager (its thread and CPU copies) and a gloo process group behind.
    import torch.distributed as dist
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    import flashdist.runtime.async_sharded as async_sharded
    from flashdist.tasks.classification import ClassificationTask

    stagers, groups, make_stager, make_group = [], [], async_sharded._stager, async_sharded._new_gloo_group

    def recorded_stager():
        stager = make_stager()
        close = stager.close
        stager.closed = False

        def recorded_close():
            stager.closed = True
            close()

        stager.close = recorded_close
        stagers.append(stager)
        return stager

    monkeypatch.setattr(async_sharded, "_stager", recorded_stager)
    monkeypatch.setattr(async_sharded, "_new_gloo_group", lambda: groups.append(make_group()) or groups[-1])

    def writer_threads():
        return [t.name for t in threading.enumerate() if t.name.startswith("flashdist-checkpoint")]

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)
    task = ClassificationTask(torch.nn.Linear(4, 2), num_classes=2, optimizer="sgd", learning_rate=0.1)
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, strategy="fsdp", max_epochs=1,
                                logger=False, enable_progress_bar=False, enable_model_summary=False, async_checkpoint=True,
                                callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=4, save_top_k=-1)])
    try:
        trainer.fit(task, data)
        assert len(stagers) == len(groups) == 1 and stagers[0].closed
        assert writer_threads() == []
        with pytest.raises(ValueError):  # no longer a registered group
            dist.get_backend(groups[0])
        trainer.validate(task, data)  # a later stage tears the strategy down again: nothing left to release
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.suffix == ".ckpt")
    assert saved == ["epoch=0-step=4.ckpt", "epoch=0-step=8.ckpt"]
    assert all(verify(tmp_path / "checkpoints" / name) == [] for name in saved)
