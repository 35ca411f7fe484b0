"""FSDP2's asynchronous checkpoints: torch DCP's ``async_save`` into a partial directory, finished in the background.

What training waits for and what it does not is described in runtime/async_checkpoint.py; this
module is the FSDP2 route: the save (buffers copied now, the shards staged by DCP's stager while
the next step runs), the optimizer step that waits for that copy, and the background job that
waits for DCP's upload, hashes the shards, writes the manifest and renames the directory.
"""

from __future__ import annotations

import os
import shutil
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection

from flashdist.compat.lightning import dcp_metadata_filename
from flashdist.runtime.background_writer import _WRITERS, BackgroundWriter, snapshot
from flashdist.runtime.checkpoint import (
    _fsync_dir,
    _partial_name,
    _write_sharded_manifest,
    make_sharded_saves_atomic,
    remove_partials,
)


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

    original_teardown = strategy.teardown

    def teardown() -> None:
        # The fit is over and its save in flight waited for (AwaitCheckpoint): release the writer's
        # thread, the stager's thread and CPU copies, and the checkpoint's process group, so that a
        # notebook's next Trainer does not inherit them. A later fit of this Trainer makes new ones.
        try:
            writer.close()
        finally:
            while stager:
                stager.pop().close()
            while group:
                _destroy_group(group.pop())
            cleaned.clear()  # a later fit looks for leftovers again
            original_teardown()

    save_checkpoint.atomic = True  # type: ignore[attr-defined]
    strategy.save_checkpoint, strategy.remove_checkpoint = save_checkpoint, remove_checkpoint
    strategy.optimizer_step, strategy.teardown = optimizer_step, teardown


def _new_gloo_group() -> Any:
    """A process group for the checkpoint's collectives, so they never interleave with training's."""
    import torch.distributed as dist

    return dist.new_group(backend="gloo") if dist.is_available() and dist.is_initialized() else None


def _destroy_group(group: Any) -> None:
    import torch.distributed as dist

    if group is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group(group)


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
