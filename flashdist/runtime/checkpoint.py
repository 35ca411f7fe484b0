"""Checkpoints that are complete or absent, and which checkpoint a run resumes from.

Atomic writes: every checkpoint is written under a temporary name (``.<name>.partial``) and
renamed onto its real name only once complete: a file after ``fsync``; a sharded directory
(DeepSpeed) after every rank has written its shard (a barrier), renamed by rank 0. A
``kill -9`` during a write therefore leaves the previous checkpoints untouched and a
``.partial`` that nothing loads (Lightning's "last" lookup and :func:`find_resume_checkpoint`
only consider names ending in ``.ckpt``); the next atomic save in that directory removes it.
A ``last.ckpt`` is written the same way, so "last" only ever names a complete checkpoint.

Auto-resume (``fit(ckpt_path="auto")``, and the default when torchrun or SLURM restarted
the process, i.e. ``TORCHELASTIC_RESTART_COUNT`` or ``SLURM_RESTART_COUNT`` > 0): the newest
complete checkpoint in the run's checkpoint directories (its ``ModelCheckpoint`` dirpaths
and ``<default_root_dir>/checkpoints``); none → start fresh. A run whose ``summary.json``
says it completed is not resumed (``"auto"`` refuses; a restart starts nothing new).
Preemption checkpoints are deleted when a run completes, so they can never be stale.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from flashdist.compat.lightning import process_group_settings, validation_loader_defined
from flashdist.errors import ConfigError
from flashdist.runtime import manifest as manifests

PARTIAL_SUFFIX = ".partial"
PREEMPT_PREFIX = "preempted-"
RESTART_ENV = ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT")


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partials(directory: Path) -> None:
    """Delete what interrupted writes left behind (``.*.partial`` files and directories)."""
    if not directory.is_dir():
        return
    for leftover in directory.glob(f".*{PARTIAL_SUFFIX}"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.partial`` (hashed as it is written), ``fsync``, then rename:
    a checkpoint is whole or absent.

    Then its manifest (runtime/manifest.py), last and atomically.

    Example:
        >>> import tempfile; target = Path(tempfile.mkdtemp()) / "step=1.ckpt"
        >>> AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)
        >>> sorted(p.name for p in target.parent.iterdir())
        ['step=1.ckpt', 'step=1.ckpt.manifest.json']
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_partials(path.parent)
        partial = _partial_name(path)
        with partial.open("wb") as handle:
            hashing = manifests.HashingWriter(handle)  # hashed as written: no second read of the file
            torch.save(checkpoint, hashing)
            handle.flush()
            os.fsync(handle.fileno())
        entries = {path.name: hashing.entry()}  # complete and hashed before it is renamed into place
        manifests.manifest_path(path).unlink(missing_ok=True)  # never a stale manifest beside a new file
        os.replace(partial, path)
        _fsync_dir(path.parent)
        manifests.write_manifest(path, entries, checkpoint, hashing_s=hashing.hashing_s)

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        manifests.manifest_path(Path(path)).unlink(missing_ok=True)


def writes_directories(strategy: Any) -> bool:
    """DeepSpeed and FSDP2 (``ModelParallelStrategy``, torch DCP) write a directory from every rank."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    return hasattr(type(strategy), "zero_stage_3") or isinstance(strategy, ModelParallelStrategy)


def make_sharded_saves_atomic(strategy: Any) -> None:
    """Wrap a strategy whose checkpoints are directories written by every rank (DeepSpeed).

    All ranks write into ``.<name>.partial/``; after a barrier, rank 0 renames it to ``<name>``
    (replacing an older one of that name only then).
    """
    if getattr(strategy.save_checkpoint, "atomic", False) or not writes_directories(strategy):
        return
    original = strategy.save_checkpoint

    def save_checkpoint(checkpoint: dict, filepath: Any, storage_options: Any = None) -> None:
        target = Path(strategy.broadcast(str(filepath)))
        partial = _partial_name(target)
        if strategy.is_global_zero:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_partials(target.parent)
        strategy.barrier("flashdist_checkpoint_begin")
        original(checkpoint, partial, storage_options)
        strategy.barrier("flashdist_checkpoint_written")  # every shard is on disk
        _write_sharded_manifest(strategy, partial, checkpoint)
        if strategy.is_global_zero:
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(partial, target)
            _fsync_dir(target.parent)
            if target.is_file():  # one consolidated file (rank 0): its manifest beside it
                started = time.perf_counter()
                entries = manifests.hash_files(target.parent, [target.name])
                manifests.write_manifest(target, entries, checkpoint, hashing_s=time.perf_counter() - started)
        strategy.barrier("flashdist_checkpoint_renamed")

    save_checkpoint.atomic = True  # type: ignore[attr-defined]  # wrapped once, however often installed
    strategy.save_checkpoint = save_checkpoint


def _write_sharded_manifest(strategy: Any, directory: Path, checkpoint: dict, group: Any = None) -> None:
    """Each rank hashes the shards it wrote; rank 0 writes the manifest into the directory.

    ``group``: the process group to gather on (an asynchronous save's own; None: the default one).
    """
    import torch.distributed as dist

    if not directory.is_dir():  # a strategy told to write one consolidated file: after its rename
        return
    started = time.perf_counter()
    names = manifests.checkpoint_files(directory)
    mine = manifests.hash_files(directory, manifests.files_written_by(names, strategy.global_rank, strategy.world_size))
    gathered: list[Any] = [mine]
    if strategy.world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered = [None] * strategy.world_size
        dist.all_gather_object(gathered, mine, group=group)
    if strategy.is_global_zero:
        entries = {name: entry for part in gathered for name, entry in part.items()}
        manifests.write_manifest(directory, entries, checkpoint, hashing_s=time.perf_counter() - started)


def install_atomic_checkpoints(trainer: Any) -> None:
    """Make every checkpoint this Trainer writes atomic (see the module docstring)."""
    strategy = trainer.strategy
    if writes_directories(strategy):
        make_sharded_saves_atomic(strategy)
    elif type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


# ---- which checkpoint to resume from ---------------------------------------------------------
def checkpoint_dirs(trainer: Any) -> list[Path]:
    """Where this run's checkpoints live: its ModelCheckpoint dirpaths, then root/checkpoints."""
    dirs = [Path(cb.dirpath) for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    dirs.append(Path(trainer.default_root_dir) / "checkpoints")
    return list(dict.fromkeys(dirs))


def find_resume_checkpoint(directories: list[Path]) -> Path | None:
    """The newest complete checkpoint (file or DeepSpeed directory named ``*.ckpt``), or None.

    Example:
        >>> find_resume_checkpoint([Path("/nonexistent")]) is None
        True
    """
    candidates = [
        p for d in directories if d.is_dir() for p in d.glob("*.ckpt") if not p.name.startswith(".")
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))


def run_completed(root: Path) -> bool:
    try:
        return bool(json.loads((root / "summary.json").read_text()).get("completed"))
    except (OSError, ValueError):
        return False


def is_restart(environ: Any = None) -> bool:
    """Did torchrun (``--max-restarts``) or SLURM (requeue) start this process again?"""
    environ = os.environ if environ is None else environ
    return any(int(environ.get(name, "0") or 0) > 0 for name in RESTART_ENV)


LIGHTNING_NAMES = ("last", "hpc", "best", "registry")
HPC_PREFIX = "hpc_ckpt_"  # Lightning's SLURM checkpoints: <default_root_dir>/hpc_ckpt_<N>.ckpt


def resolve_ckpt_path(trainer: Any, ckpt_path: Any, trust: Any) -> Any:
    """The one path every ``ckpt_path`` takes: to a file, verified against its manifest (runtime/trust.py).

    ``"auto"`` (or ``None`` on a restart) is the newest checkpoint that verifies; Lightning's names
    ``"last"``, ``"hpc"``, ``"best"`` (and the ``"hpc"`` Lightning picks by itself under SLURM) are
    found by :func:`find_named_checkpoint` and verified as an explicit path is. What comes back
    is a path (or None: start fresh), so the resume policy and DeepSpeed's universal conversion
    see every resume the same way.
    """
    restarted = ckpt_path is None and is_restart()
    rank, world_size = trainer.global_rank, trainer.world_size
    if ckpt_path is None and not restarted and _lightning_would_load_hpc(trainer):
        ckpt_path = "hpc"
    if ckpt_path != "auto" and not restarted:
        if ckpt_path is None:
            return None
        if isinstance(ckpt_path, str) and (ckpt_path in LIGHTNING_NAMES or ckpt_path.startswith("registry:")):
            found = find_named_checkpoint(trainer, ckpt_path)
            if rank == 0:
                print(f"flashdist: ckpt_path={ckpt_path!r}: resuming from {found}", file=sys.stderr, flush=True)
            return str(trust.select_explicit(found, rank, world_size))
        return str(trust.select_explicit(ckpt_path, rank, world_size))
    root = Path(trainer.default_root_dir)
    if run_completed(root):
        if restarted:
            return None
        raise ConfigError(
            f"ckpt_path='auto': the run in {root} already completed (summary.json), there is nothing to resume.",
            hint="use a new default_root_dir for a new run, or pass an explicit ckpt_path to train on from a checkpoint.",
        )
    found = trust.select_auto(checkpoint_dirs(trainer), rank, world_size)
    if found is None and _lightning_would_load_hpc(trainer):  # else Lightning would load it, unverified
        return resolve_ckpt_path(trainer, "hpc", trust)
    partials = sorted(p.name for d in checkpoint_dirs(trainer) if d.is_dir() for p in d.glob(f".*{PARTIAL_SUFFIX}"))
    how = "restart" if restarted else "ckpt_path='auto'"
    if rank == 0:
        print(
            f"flashdist: {how}: " + (f"resuming from {found}" if found else "no complete checkpoint, starting fresh")
            + (f" (ignoring incomplete: {', '.join(partials)})" if partials else ""),
            file=sys.stderr,
            flush=True,
        )
    return str(found) if found is not None else None


def find_named_checkpoint(trainer: Any, name: str) -> Path:
    """The file Lightning's ``ckpt_path`` name stands for, found as Lightning finds it; ConfigError naming what was searched.

    - ``"last"``: the newest ``last*.ckpt`` (each ModelCheckpoint's ``CHECKPOINT_NAME_LAST``) in the run's checkpoint directories;
    - ``"hpc"``: the checkpoint a SLURM preemption saved: flashdist's newest ``preempted-step=<N>.ckpt`` in the
      run's checkpoint directories (flashdist's handler replaces Lightning's, which would have written
      ``hpc_ckpt_<N>.ckpt``), else ``<default_root_dir>/hpc_ckpt_<N>.ckpt`` with the highest N (a plain Lightning run's);
    - ``"best"``: the ModelCheckpoint's ``best_model_path`` (known after a fit of this Trainer that monitored a metric).

    Example:
        >>> find_named_checkpoint(trainer, "last")  # doctest: +SKIP
        PosixPath('run/checkpoints/last.ckpt')
    """
    if name == "last":
        prefixes = {getattr(cb, "CHECKPOINT_NAME_LAST", "last") for cb in trainer.checkpoint_callbacks} or {"last"}
        dirs = checkpoint_dirs(trainer)
        found = [p for d in dirs if d.is_dir() for p in d.glob("*.ckpt")
                 if not p.name.startswith(".") and any(p.stem.startswith(prefix) for prefix in prefixes)]
        if found:
            return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))
        searched = f"{' or '.join(sorted(f'{x}*.ckpt' for x in prefixes))} in {', '.join(str(d) for d in dirs)}"
        hint = "save one with ModelCheckpoint(save_last=True), or pass ckpt_path='auto' (the newest checkpoint of the run) or a path."
    elif name == "hpc":
        dirs = checkpoint_dirs(trainer)
        preempted = [p for d in dirs if d.is_dir() for p in d.glob(f"{PREEMPT_PREFIX}*.ckpt")]
        if preempted:
            return max(preempted, key=lambda p: (p.stat().st_mtime_ns, p.name))
        found_hpc = _hpc_checkpoint(Path(trainer.default_root_dir))
        if found_hpc is not None:
            return found_hpc
        searched = (f"{PREEMPT_PREFIX}step=<N>.ckpt in {', '.join(str(d) for d in dirs)} "
                    f"and {HPC_PREFIX}<N>.ckpt in {trainer.default_root_dir}")
        hint = ("an HPC checkpoint is what a SLURM preemption (SIGUSR1) saves, and a completed run deletes it; "
                "pass ckpt_path='auto' (the newest checkpoint of the run, or a fresh start) or a path.")
    elif name == "best":
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        if best and Path(best).exists():
            return Path(best)
        searched = (f"the best_model_path of {type(trainer.checkpoint_callback).__name__} ({best or 'none recorded'})"
                    if trainer.checkpoint_callback else "a ModelCheckpoint (this Trainer has none)")
        hint = "'best' is known after a fit of this Trainer with ModelCheckpoint(monitor=...); in a new process pass the path."
    else:
        raise ConfigError(
            f"ckpt_path={name!r}: flashdist cannot verify a model-registry checkpoint before it is downloaded.",
            accepted=("auto", *LIGHTNING_NAMES[:3], "a path"),
            hint="download it (litmodels.download_model) and pass its path as ckpt_path.",
        )
    raise ConfigError(f"ckpt_path={name!r} found no checkpoint: searched {searched}.",
                      accepted=("auto", *LIGHTNING_NAMES[:3], "a path"), hint=hint)


def _hpc_checkpoint(root: Path) -> Path | None:
    versions = [(int(p.stem[len(HPC_PREFIX):]), p) for p in root.glob(f"{HPC_PREFIX}*.ckpt") if p.stem[len(HPC_PREFIX):].isdigit()]
    return max(versions)[1] if versions else None


def _lightning_would_load_hpc(trainer: Any) -> bool:
    """Lightning loads ``hpc`` by itself when ``ckpt_path`` is None under SLURM with an HPC checkpoint present."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect() and _hpc_checkpoint(Path(trainer.default_root_dir)) is not None


def remove_preemption_checkpoints(trainer: Any) -> None:
    """Called when a run completes: its preemption checkpoints must never be resumed later."""
    for directory in checkpoint_dirs(trainer):
        if directory.is_dir():
            for path in directory.glob(f"{PREEMPT_PREFIX}*.ckpt"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                manifests.manifest_path(path).unlink(missing_ok=True)


# ---- monitored metrics -----------------------------------------------------------------------
_LOGGING_HOOKS = (
    "training_step", "validation_step", "on_train_batch_end", "on_train_epoch_end",
    "on_validation_batch_end", "on_validation_epoch_end", "on_train_epoch_start", "on_validation_epoch_start",
)


def metrics_a_fit_logs(trainer: Any) -> set[str] | None:
    """Every metric name this fit can log, when that is knowable before training, else None.

    Knowable for a flashdist ``Task`` whose logging hooks are flashdist's own, with no user
    callback that could log: ``train_loss``, plus ``val_loss`` and ``val_<metric>`` when
    validation runs at all.
    """
    from flashdist.tasks.model import Task

    module = trainer.lightning_module
    if not isinstance(module, Task) or any(getattr(type(module), h) is not getattr(Task, h) for h in _LOGGING_HOOKS):
        return None
    for callback in trainer.callbacks:
        owner = type(callback).__module__
        if not owner.startswith(("lightning.", "flashdist.")):
            if any(getattr(type(callback), h, None) is not None for h in _LOGGING_HOOKS if h.startswith("on_")):
                return None
    names = {"train_loss", "epoch", "step"}
    validates = trainer.limit_val_batches != 0 and validation_loader_defined(trainer)
    if validates and trainer.check_val_every_n_epoch is not None and trainer.max_epochs not in (None, -1):
        validates = trainer.check_val_every_n_epoch <= trainer.max_epochs
    if validates:
        names |= {"val_loss", *module.val_metrics.keys()}
    return names


def check_monitored_metrics(trainer: Any) -> None:
    """Refuse, before training, a ModelCheckpoint/EarlyStopping monitor the fit never logs.

    Lightning only notices at the first save, after an epoch of work (or never, for a
    ModelCheckpoint that then silently keeps only the last).
    """
    logged = metrics_a_fit_logs(trainer)
    if logged is None:
        return
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor not in logged:
            raise ConfigError(
                f"{type(callback).__name__}(monitor={monitor!r}): this fit never logs {monitor!r}.",
                accepted=sorted(logged),
                hint="monitor one of the accepted names; val_* metrics need a validation loader and limit_val_batches > 0.",
            )


# ---- torchrun restarts: a fresh rendezvous namespace per attempt ---------------------------------
def init_process_group_for_restart(trainer: Any) -> None:
    """On a torchrun restart, form the default process group on a per-attempt store prefix.

    torch's ``env://`` rendezvous under torchrun uses the agent's store without a per-attempt
    prefix ("we create a new TCPStore for every retry"), but torchrun keeps the same store
    (measured: the same MASTER_PORT in attempts 0 and 1), so gloo read the previous attempt's
    addresses: "connectFullMesh failed ... Connection refused", or both ranks stuck in
    init_process_group. Lightning skips its own initialisation when a group exists.
    """
    import torch
    import torch.distributed as dist

    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not dist.is_available() or dist.is_initialized():
        return
    backend, timeout = process_group_settings(trainer.strategy)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    timeout = timeout or dist.default_pg_timeout
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout)
    prefixed = dist.PrefixStore(f"/flashdist/attempt_{attempt}", store)
    dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world_size, timeout=timeout)
