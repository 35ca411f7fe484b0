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

import os
import shutil
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning_utilities.core.apply_func import apply_to_collection

from flashdist.compat.lightning import dcp_metadata_filename
from flashdist.errors import ConfigError
from flashdist.runtime.checkpoint import (
    AtomicCheckpointIO,
    _fsync_dir,
    _partial_name,
    _write_sharded_manifest,
    make_sharded_saves_atomic,
    remove_partials,
    writes_directories,
)

# The background writer of each strategy (FSDP2's is not a CheckpointIO): looked up, never stashed on it.
_WRITERS: weakref.WeakKeyDictionary[Any, BackgroundWriter] = weakref.WeakKeyDictionary()


def snapshot(checkpoint: Any, reuse: list[torch.Tensor] | None = None) -> Any:
    """A copy of ``checkpoint`` whose tensors training can no longer change (containers rebuilt).

    ``reuse``: the buffers of the previous snapshot, which nothing reads any more; a tensor of the
    same shape and dtype at the same place is copied into its buffer (fresh memory costs page
    faults: 1.2 s against 0.2 s for 256 MB on the loaded 2-core CI machine), and the list is
    replaced by this snapshot's buffers. Other objects are kept by reference, as in Lightning's
    ``AsyncCheckpointIO``.

    Example:
        >>> live = {"w": torch.zeros(2)}; copy = snapshot(live); live["w"] += 1
        >>> copy["w"].tolist()
        [0.0, 0.0]
    """
    previous = iter(reuse or [])
    buffers: list[torch.Tensor] = []
    on_gpu = False

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal on_gpu
        tensor = tensor.detach()
        buffer = next(previous, None)
        if tensor.layout != torch.strided:
            buffer = tensor.clone()
        else:
            gpu = tensor.device.type != "cpu"
            on_gpu |= gpu
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype or buffer.stride() != tensor.stride():
                buffer = torch.empty_like(tensor, device="cpu", pin_memory=gpu and torch.cuda.is_available())
            buffer.copy_(tensor, non_blocking=gpu)
        buffers.append(buffer)
        return buffer

    copied = apply_to_collection(checkpoint, torch.Tensor, copy)
    if on_gpu and torch.cuda.is_available():
        torch.cuda.synchronize()  # the non-blocking device-to-host copies are complete
    if reuse is not None:
        reuse[:] = buffers
    return copied


class BackgroundWriter:
    """One background thread; at most one save in flight; errors raised on the caller's thread."""

    def __init__(self, say: Callable[[str], None] | None = None):
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: tuple[str, Future] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.blocked_s: list[float] = []  # seconds each save held the caller (the bench reads it)
        # of which waiting for the previous save (back-pressure: saves closer together than a write)
        self.waited_s: list[float] = []
        self.written_s: list[float] = []  # seconds each save took on the background thread, once complete
        # FSDP2: the copy of the state still being made on DCP's staging thread, and the seconds
        # each save's first optimizer step waited for it (training blocked after the save returned)
        self.staging: Future | None = None
        self.staging_waited_s: list[float] = []

    @property
    def busy(self) -> bool:
        """A save is being written right now."""
        return self._in_flight is not None and not self._in_flight[1].done()

    def wait_for_save_in_flight(self, next_name: str | None = None) -> None:
        """Block until the save in flight (if any) is complete; raise its error, if it failed."""
        in_flight = self._in_flight
        if in_flight is not None:
            name, future = in_flight
            if not future.done() and next_name is not None:
                self._say(f"flashdist: checkpoint {next_name} waits for {name}, still being written in the background")
            future.exception()  # waits; the error itself is recorded by the job
            self._in_flight = None
            self.staging = None  # complete with the save
        self.raise_error()

    def wait_for_staging(self) -> None:
        """Block until the save in flight has copied the state it saves (a no-op once it has); the wait is recorded.

        A staging failure is not raised here: the save fails with it, and that is raised at the next save or wait.
        """
        staging, self.staging = self.staging, None
        if staging is not None:
            started = time.perf_counter()
            staging.exception()  # waits
            self.staging_waited_s.append(time.perf_counter() - started)

    def wait_before_save(self, name: str, announce: bool = True) -> None:
        """A save's first step: wait for the save in flight (saying so if ``announce``); the wait is recorded."""
        started = time.perf_counter()
        self.wait_for_save_in_flight(next_name=name if announce else None)
        self.waited_s.append(time.perf_counter() - started)

    def submit_save(self, name: str, job: Callable[[], None]) -> None:
        def timed() -> None:
            started = time.perf_counter()
            job()
            self.written_s.append(time.perf_counter() - started)

        self._in_flight = (name, self._pool().submit(self._guarded, timed))

    def submit_after(self, job: Callable[[], None]) -> None:
        """Run ``job`` after the save in flight, and only if no background save failed."""
        if self._in_flight is None:
            job()
        else:
            self._pool().submit(self._guarded, job)

    def close(self) -> None:
        """Wait for everything queued, stop the thread, raise a background failure."""
        try:
            self.wait_for_save_in_flight()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        self.raise_error()

    def raise_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"flashdist: a background checkpoint save failed: {type(error).__name__}: {error}") from error

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flashdist-checkpoint")
        return self._executor

    def _guarded(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            return  # a save failed: nothing queued after it (a removal) may run
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - handed to the training thread
            with self._lock:
                self._error = error


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


def make_sharded_saves_async(strategy: Any) -> None:
    """FSDP2: ``dcp.async_save`` into ``.<name>.partial/``; hashed, manifest, renamed by rank 0 in the background.

    A strategy told to write one consolidated file (``save_distributed_checkpoint=False``)
    keeps its synchronous atomic save.
    """
    if getattr(strategy.save_checkpoint, "atomic", False):
        return
    if not getattr(strategy, "_save_distributed_checkpoint", True):
        make_sharded_saves_atomic(strategy)
        return
    writer = _WRITERS[strategy] = BackgroundWriter()
    original_remove, original_step = strategy.remove_checkpoint, strategy.optimizer_step
    group: list[Any] = []  # the checkpoint's own gloo process group, made by every rank at the first save
    # One stager for the strategy's life (DCP reuses its CPU copies, keyed by storage, save after
    # save), made at the first save: with CUDA its copy stream must be made after training's.
    stager: list[Any] = []
    cleaned: set[Path] = set()  # directories whose leftover partials are gone

    def save_checkpoint(checkpoint: dict, filepath: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(strategy).__name__}.save_checkpoint takes no storage_options.")
        target = Path(strategy.broadcast(str(filepath)))
        started = time.perf_counter()
        # each rank's last job ends after the others' rename; rank 0 alone says that it waits
        writer.wait_before_save(target.name, announce=strategy.is_global_zero)
        if not group:
            group.append(_new_gloo_group())
        partial = _partial_name(target)
        if target.parent not in cleaned:
            # What a killed run left in this directory goes once, before any rank writes here; later
            # partials here are this fit's own, each complete before the next save starts. (Every rank
            # has the same target, so every rank takes this branch, and its barrier, together.)
            if strategy.is_global_zero:
                target.parent.mkdir(parents=True, exist_ok=True)
                remove_partials(target.parent)
            strategy.barrier("flashdist_checkpoint_begin")
            cleaned.add(target.parent)
        state = {"state_dict": copy_buffers(checkpoint.pop("state_dict"))}
        state.update({f"optimizer_{i}": s for i, s in enumerate(checkpoint.pop("optimizer_states", []))})
        metadata = snapshot(checkpoint) if strategy.is_global_zero else None
        if not stager:
            stager.append(_stager())
        upload, writer.staging = _dcp_async_save(state, partial, group[0], stager[0])
        for optimizer in strategy.optimizers:
            if optimizer not in hooked:
                hooked.add(optimizer)
                optimizer.register_step_pre_hook(raw_step_waits)
        writer.submit_save(target.name, lambda: _finish_sharded(strategy, upload, metadata, partial, target, group[0]))
        writer.blocked_s.append(time.perf_counter() - started)

    def remove_checkpoint(filepath: Any) -> None:
        writer.submit_after(lambda: original_remove(filepath))

    def optimizer_step(optimizer: Any, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        def closure_then_staged() -> Any:
            # The forward and backward overlapped the copy; the update must not change what it copies.
            result = closure()
            writer.wait_for_staging()  # a no-op unless a save's copy is in flight
            return result

        # torch runs an optimizer's pre-step hooks before the closure: raw_step_waits stands aside
        inside_lightning_step.append(True)
        try:
            return original_step(optimizer, closure_then_staged, model, **kwargs)
        finally:
            inside_lightning_step.pop()

    inside_lightning_step: list[bool] = []
    hooked: weakref.WeakSet[Any] = weakref.WeakSet()

    def raw_step_waits(optimizer: Any, args: Any, kwargs: Any) -> None:
        # A step on the torch optimizer itself (not through Lightning's optimizer_step, e.g. a
        # manual-optimization user's), before its update: it waits for the copy too.
        if writer.staging is not None and not inside_lightning_step:
            writer.wait_for_staging()

    save_checkpoint.atomic = True  # type: ignore[attr-defined]
    strategy.save_checkpoint, strategy.remove_checkpoint = save_checkpoint, remove_checkpoint
    strategy.optimizer_step = optimizer_step


def _new_gloo_group() -> Any:
    """A process group for the checkpoint's collectives, so they never interleave with training's."""
    import torch.distributed as dist

    return dist.new_group(backend="gloo") if dist.is_available() and dist.is_initialized() else None


def copy_buffers(model_state: dict[str, Any]) -> dict[str, Any]:
    """The model's state with every tensor but FSDP2's sharded parameters (DTensors) copied now.

    The asynchronous staging copies the rest while the next step runs, and only the optimizer
    step (which waits for it) changes a sharded parameter; a buffer can change in the forward.

    Example:
        >>> live = {"bn.running_mean": torch.zeros(2)}; saved = copy_buffers(live); live["bn.running_mean"] += 1
        >>> saved["bn.running_mean"].tolist()
        [0.0, 0.0]
    """
    from torch.distributed.tensor import DTensor

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if isinstance(tensor, DTensor) else tensor.detach().clone()

    return apply_to_collection(model_state, torch.Tensor, copy)


def _stager() -> Any:
    """DCP's stager: the CPU copy made on its own thread (pinned, and non-blocking on a copy stream, with CUDA)."""
    from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

    cuda = torch.cuda.is_available()
    return DefaultStager(StagingOptions(use_pinned_memory=cuda, use_shared_memory=False, use_async_staging=True, use_non_blocking_copy=cuda))


def _dcp_async_save(state: dict, partial: Path, group: Any, stager: Any) -> tuple[Future, Future | None]:
    """torch DCP's ``async_save``: the upload (written on DCP's thread) and the staging (None when staged before it returned)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse

    partial.mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():
        # DCP's copy stream does not wait for training's: the last optimizer step's kernels finish first.
        torch.cuda.current_stream().synchronize()
    response = dcp.async_save(state, checkpoint_id=partial, process_group=group, async_stager=stager, no_dist=group is None)
    if isinstance(response, AsyncSaveResponse):
        return response.upload_completion, response.staging_completion
    return response, None


def _finish_sharded(strategy: Any, upload: Future, metadata: Any, partial: Path, target: Path, group: Any) -> None:
    """On the background thread: the shards are written; then the manifest, the rename, and every rank agrees."""
    import torch.distributed as dist

    upload.result()
    if metadata is not None:
        torch.save(metadata, partial / dcp_metadata_filename())  # Lightning's non-tensor state, as its own save writes it
    _write_sharded_manifest(strategy, partial, metadata or {}, group=group)
    if strategy.is_global_zero:
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(partial, target)
        _fsync_dir(target.parent)
    if group is not None:
        dist.barrier(group=group)  # every rank's save ends once rank 0 renamed it


def wait_for_checkpoints(strategy: Any) -> None:
    """Block until this strategy's checkpoint in flight (if any) is complete; a no-op when saves are synchronous.

    Example:
        >>> trainer.save_checkpoint("x.ckpt"); wait_for_checkpoints(trainer.strategy)  # doctest: +SKIP
    """
    writer = _WRITERS.get(strategy)
    if writer is not None:
        writer.wait_for_save_in_flight()


def background_writer(strategy: Any) -> BackgroundWriter | None:
    """The strategy's background writer (its ``blocked_s`` per save), or None when saves are synchronous."""
    return _WRITERS.get(strategy)


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
