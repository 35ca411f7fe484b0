"""Checkpoints that do not stop training: ``Trainer(async_checkpoint=True)``.

Training is blocked only while the checkpoint's state is copied (snapshotted); writing,
``fsync``, hashing, the manifest and the rename run on one background thread, in the same
order as a synchronous save (runtime/checkpoint.py), so a checkpoint is still whole or absent:

- one-file checkpoints (DDP, one process): the tensors are cloned on the caller's thread
  (to pinned CPU memory from a GPU), then :class:`AtomicCheckpointIO` writes them in the
  background (Lightning's experimental ``AsyncCheckpointIO`` takes the same snapshot, but
  queues saves without bound and writes no manifest);
- FSDP2 (``ModelParallelStrategy``'s torch DCP directories): ``torch.distributed.checkpoint.
  async_save`` with DCP's asynchronous stager: the copy of the rank's shards to CPU (pinned
  where CUDA is present) runs on the stager's thread while the next step's forward and backward
  run, and the next optimizer step waits for it (after its closure, before the update) so the
  copy holds the saved step's values; buffers (which a forward may change, e.g. BatchNorm's
  running statistics) are copied before the save returns. DCP writes the shards on its own
  thread; the flashdist thread then waits for that, hashes the rank's shards, and (rank 0)
  writes the manifest and renames the directory into place. Its collectives run on a gloo
  process group of their own, never the one training uses;
- DeepSpeed is refused: its engine's ``save_checkpoint`` writes the live optimizer state
  itself, synchronously, and offers no snapshot to hand to a background writer.

At most one save is in flight: the next one waits for it (and says so on stderr), so one
snapshot is held at a time. A checkpoint removal (``ModelCheckpoint(save_top_k=k)``) is queued
behind the save in flight, so an older checkpoint is never deleted before the newer one is
complete. The end of training, a preemption's stop and an exception wait for the save in
flight (:class:`AwaitCheckpoint`, and the strategy's teardown). A background failure is
raised on the training thread at the next save or wait.
"""


from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback

from flashdist.errors import ConfigError
from flashdist.runtime.async_sharded import make_sharded_saves_async
from flashdist.runtime.background_writer import _WRITERS, BackgroundWriter, background_writer, snapshot, wait_for_checkpoints
from flashdist.runtime.checkpoint import AtomicCheckpointIO, writes_directories

__all__ = ["AsyncAtomicCheckpointIO", "AwaitCheckpoint", "BackgroundWriter", "background_writer", "install_async_checkpoints",
           "snapshot", "wait_for_checkpoints"]


class AsyncAtomicCheckpointIO(AtomicCheckpointIO):
    """:class:`AtomicCheckpointIO` on a background thread, after a snapshot on the caller's.

    Example:
        >>> import tempfile; target = Path(tempfile.mkdtemp()) / "step=1.ckpt"
        >>> io = AsyncAtomicCheckpointIO(); io.save_checkpoint({"global_step": 1}, target); io.teardown()
        >>> sorted(p.name for p in target.parent.iterdir())
        ['step=1.ckpt', 'step=1.ckpt.manifest.json']
    """

    def __init__(self) -> None:
        super().__init__()
        self.writer = BackgroundWriter()
        self._buffers: list[torch.Tensor] = []  # the previous snapshot's, reused once its save is complete

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        started = time.perf_counter()
        self.writer.wait_before_save(Path(path).name)  # then nothing reads the buffers
        copied = snapshot(checkpoint, reuse=self._buffers)
        write = super().save_checkpoint
        self.writer.submit_save(Path(path).name, lambda: write(copied, path))
        self.writer.blocked_s.append(time.perf_counter() - started)

    def remove_checkpoint(self, path: Any) -> None:
        remove = super().remove_checkpoint
        self.writer.submit_after(lambda: remove(path))

    def wait(self) -> None:
        self.writer.wait_for_save_in_flight()

    def teardown(self) -> None:
        self.writer.close()


def install_async_checkpoints(trainer: Any) -> None:
    """Make this Trainer's checkpoints asynchronous and atomic, or refuse (before any work) where they cannot be."""
    strategy = trainer.strategy
    if hasattr(type(strategy), "zero_stage_3"):
        raise ConfigError(
            "async_checkpoint=True with a DeepSpeed strategy: DeepSpeed's engine writes its live optimizer "
            "state itself, synchronously, and offers no snapshot a background writer could take over.",
            hint="drop async_checkpoint, or train with strategy='ddp' / 'fsdp' for asynchronous checkpoints.",
        )
    if writes_directories(strategy):
        make_sharded_saves_async(strategy)
        return
    if type(strategy.checkpoint_io) not in (TorchCheckpointIO, AtomicCheckpointIO):
        raise ConfigError(
            f"async_checkpoint=True with the checkpoint plugin {type(strategy.checkpoint_io).__name__}: "
            "flashdist makes only torch.save checkpoints asynchronous.",
            hint="drop async_checkpoint, or drop the checkpoint_io plugin.",
        )
    strategy.checkpoint_io = AsyncAtomicCheckpointIO()
    _WRITERS[strategy] = strategy.checkpoint_io.writer




class AwaitCheckpoint(Callback):
    """First at the end of training: the save in flight is on disk before the summary says the run ended.

    (A preemption's checkpoint is saved at a step boundary; the fit then ends here too.)
    """

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        wait_for_checkpoints(trainer.strategy)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        try:
            wait_for_checkpoints(trainer.strategy)
        except RuntimeError as error:  # the fit's own exception is the one to raise
            print(str(error), file=sys.stderr, flush=True)
