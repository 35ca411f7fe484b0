"""``resume_policy="keep_global_batch"``: the accumulation that keeps the saved global batch.

On a new data-parallel size the global batch (micro-batch × accumulation × data-parallel size)
stays as saved by changing ``accumulate_grad_batches``; the schedule then continues step for
step (the saved total and warmup in optimizer steps, like ``keep_schedule``, and each step
averages as many samples as before). Pure arithmetic here; :func:`apply_keep_global_batch`
sets the Trainer's accumulation before the fit plans its steps (it reads the saved identity
from the checkpoint's manifest, so DeepSpeed's config is filled with the new value).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashdist.errors import ConfigError


@dataclass(frozen=True)
class BatchSetting:
    data_parallel_size: int
    accumulate_grad_batches: int
    micro_batch_size: int

    def __str__(self) -> str:
        return (f"(devices × nodes = {self.data_parallel_size}, accumulate_grad_batches={self.accumulate_grad_batches}, "
                f"batch_size={self.micro_batch_size})")


def feasible_settings(global_batch_size: int, data_parallel_size: int, micro_batch_size: int, limit: int = 3) -> list[BatchSetting]:
    """The settings nearest to (``data_parallel_size``, ``micro_batch_size``) that make ``global_batch_size``.

    First those keeping the micro-batch (other data-parallel sizes), then those keeping the
    data-parallel size (other micro-batches), each nearest first.

    Example:
        >>> [str(s) for s in feasible_settings(16, 3, 8, limit=1)]
        ['(devices × nodes = 2, accumulate_grad_batches=1, batch_size=8)', '(devices × nodes = 1, accumulate_grad_batches=2, batch_size=8)']
    """
    out: list[BatchSetting] = []
    if global_batch_size % micro_batch_size == 0:
        per_micro = global_batch_size // micro_batch_size
        sizes = sorted((d for d in range(1, per_micro + 1) if per_micro % d == 0), key=lambda d: (abs(d - data_parallel_size), -d))
        out += [BatchSetting(d, per_micro // d, micro_batch_size) for d in sizes if d != data_parallel_size][: limit + 1]
    if global_batch_size % data_parallel_size == 0:
        per_rank = global_batch_size // data_parallel_size
        micros = sorted((m for m in range(1, per_rank + 1) if per_rank % m == 0), key=lambda m: (abs(m - micro_batch_size), -m))
        out += [BatchSetting(data_parallel_size, per_rank // m, m) for m in micros if m != micro_batch_size][:limit]
    return out


def accumulation_for(global_batch_size: int, data_parallel_size: int, micro_batch_size: int) -> int:
    """``accumulate_grad_batches`` so that micro × accumulation × data-parallel size = the global batch.

    Example:
        >>> accumulation_for(16, 1, 8), accumulation_for(16, 2, 8), accumulation_for(32, 4, 2)
        (2, 1, 4)
    """
    per_step = data_parallel_size * micro_batch_size
    accumulation, rest = divmod(global_batch_size, per_step)
    if rest or accumulation < 1:
        options = "; ".join(str(s) for s in feasible_settings(global_batch_size, data_parallel_size, micro_batch_size))
        raise ConfigError(
            f"resume_policy='keep_global_batch' cannot keep the saved global batch of {global_batch_size} samples on "
            f"{data_parallel_size} data-parallel rank(s) with batch_size={micro_batch_size}: "
            f"{global_batch_size} is not a multiple of {micro_batch_size} × {data_parallel_size}.",
            accepted=options or "none with these sizes",
            hint="launch with one of the accepted settings, or choose resume_policy='keep_schedule' or 'rescale'.",
        )
    return accumulation


def saved_batch(resume_state: dict[str, Any]) -> tuple[int, int, int] | None:
    """(global batch, data-parallel size, micro-batch) a checkpoint's identity records, or None."""
    identity = resume_state.get("identity") or {}
    global_batch, dp, accumulation = (identity.get(k) for k in ("global_batch_size", "data_parallel_size", "accumulate_grad_batches"))
    if not (isinstance(global_batch, int) and isinstance(dp, int) and isinstance(accumulation, int)):
        return None
    return global_batch, dp, global_batch // (dp * accumulation)


def apply_keep_global_batch(trainer: Any, checkpoint: Path | None, micro_batch_size: int | None) -> int | None:
    """Set ``trainer.accumulate_grad_batches`` for the checkpoint's global batch; the new value, or None.

    ``micro_batch_size`` is the train loader's ``batch_size`` when ``fit`` was given a loader;
    otherwise the saved one (same batch size assumed; the resume check compares the result).
    """
    from flashdist.runtime.manifest import read_manifest

    if checkpoint is None or trainer.resume_policy != "keep_global_batch":
        return None
    manifest = read_manifest(Path(checkpoint))
    saved = saved_batch(manifest.resume_state) if manifest is not None else None
    if saved is None:
        return None
    global_batch, saved_dp, saved_micro = saved
    dp = trainer.num_devices * trainer.num_nodes
    micro = micro_batch_size or saved_micro
    accumulation = accumulation_for(global_batch, dp, micro)
    if accumulation != trainer.accumulate_grad_batches and trainer.global_rank == 0:
        print(
            f"flashdist: resume_policy='keep_global_batch': accumulate_grad_batches {trainer.accumulate_grad_batches} → "
            f"{accumulation} (global batch {global_batch} = {micro} × {accumulation} × {dp} ranks; saved on {saved_dp})",
            file=sys.stderr,
            flush=True,
        )
    trainer.accumulate_grad_batches = accumulation
    return accumulation
