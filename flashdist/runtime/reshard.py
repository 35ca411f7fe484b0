"""DeepSpeed checkpoints resumed on another data-parallel size, through DeepSpeed's universal format.

ZeRO shards optimizer state (and under ZeRO-3 the weights) over the data-parallel ranks that
wrote it; DeepSpeed loads such a checkpoint only on the same number of ranks. On another
number, with a ``resume_policy`` that allows the change:

1. before launch (each process): the DeepSpeed config gets ``checkpoint: {load_universal: true}``
   (it must be set before the engine is built);
2. at load, once the process group exists: global rank 0 converts the verified checkpoint with
   ``deepspeed.checkpoint.ds_to_universal`` into a sibling directory ``<name>.universal``
   (written as ``.<name>.universal.partial``, given its own manifest, then renamed: whole or
   absent; reused when it already verifies), the other ranks wait at a barrier, every rank
   verifies the sibling, and DeepSpeed's universal loading reads it;
3. the resume policy then adapts the schedule as for DDP (runtime/resume.py).

Every ``torch.load`` on that path runs with ``weights_only`` forced (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``,
plus the DeepSpeed classes of :mod:`flashdist.compat.deepspeed`): the converter and the universal
loader pass ``weights_only=False`` themselves. Under ``resume_policy="strict"`` the change is
refused before launch, as is a checkpoint DeepSpeed cannot convert (with its reason).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from flashdist.compat.deepspeed import weights_only_loads, zero_shard_rank
from flashdist.errors import ConfigError
from flashdist.runtime import manifest as manifests
from flashdist.runtime.trust import verify

UNIVERSAL_SUFFIX = ".universal"


def sharded_dp_size(checkpoint: Path) -> int | None:
    """Data-parallel ranks that wrote a DeepSpeed checkpoint directory (its ZeRO shards), or None.

    Example:
        >>> sharded_dp_size(Path("/nonexistent")) is None
        True
    """
    if not checkpoint.is_dir():
        return None
    ranks = {rank for p in checkpoint.rglob("*_optim_states.pt") if (rank := zero_shard_rank(p.name)) is not None}
    return len(ranks) or None


def universal_sibling(checkpoint: Path) -> Path:
    """Where the universal conversion of ``checkpoint`` lives.

    Example:
        >>> universal_sibling(Path("/run/checkpoints/epoch=0-step=8.ckpt")).name
        'epoch=0-step=8.ckpt.universal'
    """
    return checkpoint.with_name(checkpoint.name + UNIVERSAL_SUFFIX)


def _is_deepspeed(strategy: Any) -> bool:
    return hasattr(type(strategy), "zero_stage_3")


def prepare_deepspeed_reshard(trainer: Any, ckpt_path: Any) -> bool:
    """Before launch: on another data-parallel size, refuse (strict) or ask for universal loading."""
    if ckpt_path is None or not _is_deepspeed(trainer.strategy):
        return False
    saved = sharded_dp_size(Path(ckpt_path))
    now = trainer.num_devices * trainer.num_nodes
    if saved is None or saved == now:
        return False
    if trainer.resume_policy == "strict":
        raise ConfigError(
            f"the DeepSpeed checkpoint {ckpt_path} holds ZeRO state sharded over {saved} data-parallel rank(s); "
            f"this fit has {now}, which changes the schedule (resume_policy='strict').",
            hint=f"resume on {saved} rank(s), or choose resume_policy='keep_schedule', 'rescale' or 'keep_global_batch': "
            "flashdist then converts the checkpoint to DeepSpeed's universal format and loads it on the new size.",
        )
    trainer.strategy.config.setdefault("checkpoint", {})["load_universal"] = True
    return True


def loads_universal(strategy: Any) -> bool:
    config = getattr(strategy, "config", None) or {}
    return _is_deepspeed(strategy) and bool((config.get("checkpoint") or {}).get("load_universal"))


def convert_to_universal(checkpoint: Path) -> Path:
    """Convert a verified DeepSpeed checkpoint into ``<name>.universal`` (atomically, with a manifest)."""
    from deepspeed.checkpoint import ds_to_universal

    target = universal_sibling(checkpoint)
    if target.is_dir() and not verify(target, 0, 1):
        return target  # converted before, and intact
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    args = argparse.Namespace(
        input_folder=str(checkpoint / "checkpoint"), output_folder=str(partial / "checkpoint"), num_extract_workers=1,
        num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True,
    )
    started = time.perf_counter()
    try:
        with weights_only_loads(), contextlib.redirect_stdout(sys.stderr):
            ds_to_universal.main(args)
    except Exception as error:  # DeepSpeed's converter raises assertions and plain exceptions alike
        shutil.rmtree(partial, ignore_errors=True)
        raise ConfigError(
            f"DeepSpeed cannot convert {checkpoint} to its universal format: {type(error).__name__}: {error}",
            hint="resume on the data-parallel size it was saved with.",
        ) from error
    (partial / "latest").write_text("checkpoint")  # what Lightning looks for in a DeepSpeed directory
    names = manifests.checkpoint_files(partial)
    source = manifests.read_manifest(checkpoint)
    state = {"global_step": source.global_step if source else None,
             "callbacks": {"ResumeGuard": source.resume_state if source else {}}}
    manifests.write_manifest(partial, manifests.hash_files(partial, names), state, hashing_s=time.perf_counter() - started)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    print(f"flashdist: converted {checkpoint} to DeepSpeed's universal format: {target}", file=sys.stderr, flush=True)
    return target


def universal_path_for_load(strategy: Any, checkpoint: Path) -> Path:
    """At load, process group up: rank 0 converts, all wait, every rank verifies what it reads."""
    if not loads_universal(strategy) or checkpoint.name.endswith(UNIVERSAL_SUFFIX):
        return checkpoint
    error: ConfigError | None = None
    if strategy.is_global_zero:
        try:
            convert_to_universal(checkpoint)
        except ConfigError as raised:
            error = raised
    failed = strategy.broadcast(str(error) if error else "")
    if failed:
        raise error if error is not None else ConfigError(failed)
    target = universal_sibling(checkpoint)
    failures = verify(target, strategy.global_rank, strategy.world_size)
    if not strategy.reduce_boolean_decision(not failures, all=True):
        raise ConfigError(f"the universal conversion {target} does not verify: {'; '.join(map(str, failures)) or 'on another rank'}.")
    return target
