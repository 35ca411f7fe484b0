"""The background writer behind ``Trainer(async_checkpoint=True)``: one thread, one save in flight.

Shared by both asynchronous routes (runtime/async_checkpoint.py for one-file checkpoints,
runtime/async_sharded.py for FSDP2's DCP directories): the snapshot of a checkpoint's tensors,
the writer that runs a save's job in the background and raises its failure on the training
thread, and the lookup of a strategy's writer.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection

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
