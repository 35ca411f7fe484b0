"""Which checkpoint a fit loads: verified against its manifest on every rank before anything is unpickled.

Before ``fit`` launches (each process, no collective yet):

- ``ckpt_path="auto"``: the run's checkpoints newest first; one without a manifest, or whose
  files fail their sizes or (for the files this rank reads) their SHA-256, is skipped with one
  warning naming the file and what failed; the newest that verifies is chosen. None at all →
  start fresh; some written but none verifies → :class:`~flashdist.ConfigError`.
- an explicit path: verified the same way; a failure is a ``ConfigError`` naming the file and
  the mismatch. Without a manifest (plain Lightning, an older flashdist) it is refused unless
  ``Trainer(trust_unverified_checkpoints=True)``, which loads it with a warning.

At load (the process group exists; ``strategy.load_checkpoint`` is wrapped), one collective:
every rank's choice is gathered; equal → load. A rank whose own shard failed (a flipped byte
is invisible to the others) chose an older checkpoint: all move to the newest that verifies
on every rank. Loading itself stays ``weights_only=True`` (DeepSpeed's engine included,
:mod:`flashdist.compat.deepspeed`); a refused pickle is a ``ConfigError`` saying what it held.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import sys
import warnings
import weakref
from pathlib import Path
from typing import Any

from flashdist.compat.deepspeed import load_shards_weights_only, weights_only_loads, zero_shard_rank
from flashdist.compat.lightning import record_loaded_checkpoint_path, route_checkpoint_load
from flashdist.errors import ConfigError
from flashdist.runtime.manifest import (
    FILE_MANIFEST_SUFFIX,
    Failure,
    check_files,
    files_for_rank,
    manifest_path,
    read_manifest,
    shard_rank,
)


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint was skipped, or loaded without verification on the user's explicit request."""


def list_checkpoints(directories: list[Path]) -> list[Path]:
    """A run's checkpoints newest first: ``*.ckpt`` files and directories, and the checkpoints a
    left-over manifest names (their file deleted), so a deleted checkpoint counts as written.

    Example:
        >>> list_checkpoints([Path("/nonexistent")])
        []
    """
    found: dict[Path, int] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in directory.glob("*.ckpt"):
            if not path.name.startswith("."):
                found[path] = path.stat().st_mtime_ns
        for manifest in directory.glob(f"*.ckpt{FILE_MANIFEST_SUFFIX}"):
            checkpoint = manifest.with_name(manifest.name[: -len(FILE_MANIFEST_SUFFIX)])
            found.setdefault(checkpoint, manifest.stat().st_mtime_ns)
    return sorted(found, key=lambda p: (found[p], p.name), reverse=True)


def verify(checkpoint: Path, rank: int = 0, world_size: int = 1) -> list[Failure]:
    """Every reason ``checkpoint`` fails on this rank ([] = it verifies): no or bad manifest, a file
    missing, of another size, or (the files this rank reads) of another SHA-256.

    Example:
        >>> [f.what for f in verify(Path("/nonexistent/x.ckpt"))]
        ['no manifest (not written by flashdist, or its save was interrupted)']
    """
    checkpoint = Path(checkpoint)
    try:
        manifest = read_manifest(checkpoint)
    except ValueError as error:
        return [Failure(checkpoint, manifest_path(checkpoint).name, str(error))]
    if manifest is None:
        return [Failure(checkpoint, "", "no manifest (not written by flashdist, or its save was interrupted)")]
    return check_files(checkpoint, manifest, files_for_rank(sorted(manifest.files), rank, world_size))


def _describe(failures: list[Failure]) -> str:
    return "; ".join(str(f) for f in failures)


class CheckpointTrust:
    """Chooses and verifies the checkpoint a fit loads; one per fit (``FitRun.trust``).

    Example:
        >>> CheckpointTrust().select_explicit("/nonexistent/x.ckpt", rank=0, world_size=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: ckpt_path='/nonexistent/x.ckpt' cannot be verified: ...
    """

    def __init__(self, trust_unverified: bool = False) -> None:
        self.trust_unverified = trust_unverified
        self.candidates: list[Path] = []  # "auto": every checkpoint, newest first; explicit: the one
        self.requested: Path | None = None  # the path handed to Lightning
        self.chosen: Path | None = None  # verified on this rank
        self.unverified: Path | None = None  # an explicit path loaded on trust
        # A rank other than 0 does not raise before the process group exists (rank 0 would wait
        # for it in the rendezvous): its refusal is raised on every rank by the collective.
        self._deferred: ConfigError | None = None
        # The strategies whose loads this instance routes through agree(): held weakly, so a
        # strategy is routed once per fit and nothing is stored on the strategy itself.
        self._routed: weakref.WeakSet[Any] = weakref.WeakSet()

    # ---- before launch ----------------------------------------------------------------
    def select_auto(self, directories: list[Path], rank: int, world_size: int) -> Path | None:
        """The newest checkpoint that verifies on this rank; None if none was ever written."""
        self.candidates = list_checkpoints(directories)
        self.chosen, self.unverified, self._deferred = None, None, None
        index = self._first_verified(0, rank, world_size, warn=rank == 0)
        if index is None:
            if not self.candidates:
                return None
            self._refuse(rank, ConfigError(
                f"ckpt_path='auto': none of the {len(self.candidates)} checkpoint(s) of this run verifies "
                f"({', '.join(p.name for p in self.candidates)}); each failure is in the warnings above.",
                hint="restore a checkpoint from a copy, pass an explicit ckpt_path "
                "(with Trainer(trust_unverified_checkpoints=True) for one without a manifest), "
                "or start a new run in a new default_root_dir.",
            ))
            self.requested = self.candidates[0]
            return self.requested
        self.requested = self.chosen = self.candidates[index]
        return self.chosen

    def select_explicit(self, ckpt_path: Any, rank: int, world_size: int) -> Path:
        """``ckpt_path`` verified on this rank (a ConfigError naming the file and mismatch otherwise)."""
        path = Path(ckpt_path)
        self.candidates, self.requested = [path], path
        self.chosen, self.unverified, self._deferred = None, None, None
        failures = verify(path, rank, world_size)
        if not failures:
            self.chosen = path
            return path
        no_manifest = len(failures) == 1 and failures[0].what.startswith("no manifest")
        if no_manifest and path.exists() and self.trust_unverified:
            if rank == 0:
                warnings.warn(
                    f"loading {path} without verification (it has no manifest), as "
                    "trust_unverified_checkpoints=True asks; it is still loaded with weights_only=True.",
                    UnverifiedCheckpointWarning,
                    stacklevel=3,
                )
            self.chosen = self.unverified = path
            return path
        self._refuse(rank, ConfigError(
            f"ckpt_path={str(ckpt_path)!r} cannot be verified: {_describe(failures)}.",
            hint="Trainer(trust_unverified_checkpoints=True) loads a checkpoint that has no manifest "
            "(plain Lightning, an older flashdist); or use ckpt_path='auto' to resume from the newest "
            "checkpoint that verifies." if no_manifest else
            "the checkpoint is damaged: resume from another one (ckpt_path='auto' picks the newest that verifies).",
        ))
        return path

    def _refuse(self, rank: int, error: ConfigError) -> None:
        if rank == 0:
            raise error
        self._deferred = error

    def _first_verified(self, start: int, rank: int, world_size: int, warn: bool) -> int | None:
        for index in range(start, len(self.candidates)):
            failures = verify(self.candidates[index], rank, world_size)
            if not failures:
                return index
            # Sizes are checked by every rank, hashes of shared files too: rank 0 reports those;
            # a rank's own shard hashed wrong only it can see, so it reports that itself.
            if warn or (rank != 0 and any(shard_rank(f.file) is not None and "SHA-256" in f.what for f in failures)):
                warnings.warn(
                    f"ckpt_path='auto': skipping {self.candidates[index]}: {_describe(failures)}",
                    UnverifiedCheckpointWarning,
                    stacklevel=4,
                )
        return None

    # ---- at load: one collective --------------------------------------------------------
    def agree(self, strategy: Any, requested: Any) -> Path:
        """The checkpoint every rank verified, agreed by one gather (more only when ranks differ)."""
        path = Path(requested)
        rank, world_size = strategy.global_rank, strategy.world_size
        if path != self.requested:  # e.g. Lightning resolved "last" itself: every rank refuses together
            try:
                self.select_explicit(path, rank, world_size)
            except ConfigError as error:
                self.chosen, self._deferred = None, error
        if self.unverified is not None:
            return path
        index = None if self.chosen is None else self.candidates.index(self.chosen)
        while True:
            choices = _gather(strategy, index)
            if None in choices:
                if self._deferred is not None:
                    raise self._deferred
                bad = [r for r, c in enumerate(choices) if c is None]
                raise ConfigError(
                    f"the checkpoint(s) {', '.join(str(p) for p in self.candidates)} do not verify on rank(s) {bad} "
                    "(each rank checks the shards it reads); those ranks' messages name the files.",
                    hint="restore the damaged files, resume from another checkpoint, or start a new run.",
                )
            target = max(choices)
            if all(c == target for c in choices):
                break
            if index != target:  # another rank's shard failed in a newer checkpoint
                index = self._first_verified(target, rank, world_size, warn=rank == 0)
        self.chosen = self.candidates[index]
        if self.chosen != path and rank == 0:
            print(f"flashdist: a shard of {path} failed on another rank; resuming from {self.chosen}", file=sys.stderr, flush=True)
        return self.chosen

    def install(self, strategy: Any, then: Any = None) -> None:
        """Route ``strategy.load_checkpoint`` through :meth:`agree` and the weights-only refusal
        (through :func:`flashdist.compat.lightning.route_checkpoint_load`, which replaces an earlier
        fit's routing); ``then(strategy, path)`` may turn the agreed path into the one to read
        (runtime/reshard.py). A second install on the same strategy does nothing."""
        if strategy in self._routed:
            return
        route_checkpoint_load(strategy, lambda original, path, *args, **kwargs: self.load(strategy, original, path, then, *args, **kwargs))
        self._routed.add(strategy)

    def routes(self, strategy: Any) -> bool:
        """Whether this fit's loads on ``strategy`` go through :meth:`agree`."""
        return strategy in self._routed

    def load(self, strategy: Any, original: Any, checkpoint_path: Any, then: Any, *args: Any, **kwargs: Any) -> Any:
        """``original(path)`` for the path every rank agreed on, weights-only, a refused pickle a ConfigError."""
        path = self.agree(strategy, checkpoint_path)
        if path != Path(checkpoint_path) and strategy.lightning_module is not None:
            record_loaded_checkpoint_path(strategy.lightning_module.trainer, str(path))
        if then is not None:
            path = then(strategy, path)
        engine = getattr(strategy, "deepspeed_engine", None)
        loading = contextlib.nullcontext()
        if engine is not None:
            load_shards_weights_only(engine)
            loading = weights_only_loads()  # DeepSpeed's universal loader calls torch.load itself
        try:
            with loading:
                return original(str(path), *args, **kwargs)
        except pickle.UnpicklingError as error:
            file = getattr(error, "path", None)  # compat.deepspeed.RefusedShard names the shard it refused
            raise ConfigError(
                f"refused to unpickle {file or path}: {_refused_global(error)}; flashdist loads checkpoints with "
                "weights_only=True, so a checkpoint can hold tensors and plain data but run no code.",
                hint="if you wrote this checkpoint with objects of your own, register them with "
                "torch.serialization.add_safe_globals([...]) before fit.",
                # A ZeRO optimizer shard is read by its own rank only: the others never see it.
                this_rank_only=file is not None and zero_shard_rank(Path(file).name) is not None,
            ) from error


def _refused_global(error: BaseException) -> str:
    text = str(error)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)|(Unsupported operand[^\n]*)|(Trying to [^\n]*)", text)
    if match:
        return f"it holds {match[1]!r}, which is not an allowed type" if match[1] else match[0]
    return text.strip().splitlines()[-1][:300] if text.strip() else type(error).__name__


def _gather(strategy: Any, value: int | None) -> list[int | None]:
    import torch.distributed as dist

    if strategy.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * strategy.world_size
    dist.all_gather_object(out, value)
    return out
