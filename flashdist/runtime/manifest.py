"""A manifest per checkpoint: every file's size and SHA-256, so damage is found before unpickling.

A checkpoint is a file (``step=8.ckpt``, DDP and one process) or a directory (``step=8.ckpt/``,
DeepSpeed and FSDP2's sharded checkpoints). Its manifest is JSON:

- a file's manifest sits beside it, ``step=8.ckpt.manifest.json``, written after the file
  was renamed into place (a file without one is an interrupted save, or a foreign checkpoint);
- a directory's sits inside it, ``step=8.ckpt/flashdist-manifest.json``, written by rank 0
  after every rank wrote and hashed its shards, and before the directory is renamed into
  place, so the rename publishes both at once.

Both are written last and atomically (``.partial``, ``fsync``, rename). Besides the files the
manifest carries flashdist's version and the schedule's identity (what ``ResumeGuard`` saved),
so ``flashdist plan --resume-from`` reads a checkpoint's identity without torch.

Verification (:func:`check_files`) compares sizes (cheap, every file) and hashes (the files a
rank reads: :func:`files_for_rank`), and returns every :class:`Failure`; it never unpickles.

Example:
    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "a.ckpt").write_bytes(b"weights")
    7
    >>> m = write_manifest(d / "a.ckpt", hash_files(d, ["a.ckpt"]), {})
    >>> check_files(d / "a.ckpt", read_manifest(d / "a.ckpt"), ["a.ckpt"])
    []
    >>> (d / "a.ckpt").write_bytes(b"Weights")
    7
    >>> [f.what for f in check_files(d / "a.ckpt", read_manifest(d / "a.ckpt"), ["a.ckpt"])]
    ['SHA-256 differs from the manifest']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashdist.version import __version__

MANIFEST_FORMAT = "flashdist-checkpoint-manifest/1"
DIRECTORY_MANIFEST = "flashdist-manifest.json"
FILE_MANIFEST_SUFFIX = ".manifest.json"
_CHUNK_BYTES = 4 * 2**20
# Per-rank shards: DeepSpeed's zero_pp_rank_<r>_..., torch DCP's __<r>_<k>.distcp.
_SHARD_RANK = re.compile(r"(?:^|/)(?:(?:bf16_)?zero_pp_rank_(\d+)_|__(\d+)_\d+\.distcp$)")


@dataclass(frozen=True)
class FileEntry:
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    files: dict[str, FileEntry]  # path relative to the checkpoint directory (a file: its own name)
    flashdist_version: str
    resume_state: dict[str, Any]  # ResumeGuard's saved state: identity, schedule, position
    global_step: int | None
    hashing_s: float  # seconds spent hashing at save (the manifest's cost)


@dataclass(frozen=True)
class Failure:
    """Why a checkpoint (or one of its files) does not verify."""

    checkpoint: Path
    file: str  # the file that failed ("" for the checkpoint as a whole)
    what: str

    def __str__(self) -> str:
        where = self.checkpoint / self.file if self.file and self.checkpoint.is_dir() else self.checkpoint
        return f"{where}: {self.what}"


def manifest_path(checkpoint: Path) -> Path:
    """Where a checkpoint's manifest lives (inside a directory, beside a file).

    Example:
        >>> manifest_path(Path("/nonexistent/step=8.ckpt")).name
        'step=8.ckpt.manifest.json'
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        return checkpoint / DIRECTORY_MANIFEST
    return checkpoint.with_name(checkpoint.name + FILE_MANIFEST_SUFFIX)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter:
    """A binary file's ``write`` that also hashes what passes through, so a save needs no second read.

    Example:
        >>> import io; w = HashingWriter(io.BytesIO()); w.write(b"weights")
        7
        >>> w.entry() == FileEntry(7, hashlib.sha256(b"weights").hexdigest())
        True
    """

    def __init__(self, handle: Any):
        self._handle = handle
        self._digest = hashlib.sha256()
        self._size_bytes = 0
        self.hashing_s = 0.0  # seconds spent hashing (the manifest's cost)

    def write(self, data: Any) -> int:
        started = time.perf_counter()
        self._digest.update(data)
        self.hashing_s += time.perf_counter() - started
        self._size_bytes += len(memoryview(data).cast("B"))
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def entry(self) -> FileEntry:
        return FileEntry(self._size_bytes, self._digest.hexdigest())


def hash_files(root: Path, names: list[str]) -> dict[str, FileEntry]:
    """Size and SHA-256 of each of ``names`` (relative to ``root``)."""
    return {name: FileEntry((root / name).stat().st_size, sha256_file(root / name)) for name in names}


def checkpoint_files(checkpoint: Path) -> list[str]:
    """Every file a checkpoint consists of, relative to its directory (a file: its own name)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return [checkpoint.name]
    return sorted(
        p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file() and p.name != DIRECTORY_MANIFEST
    )


def shard_rank(name: str) -> int | None:
    """The rank a per-rank shard belongs to, or None for a file every rank reads.

    Example:
        >>> shard_rank("checkpoint/zero_pp_rank_1_mp_rank_00_optim_states.pt"), shard_rank("__0_0.distcp")
        (1, 0)
        >>> shard_rank("checkpoint/mp_rank_00_model_states.pt") is None
        True
    """
    match = _SHARD_RANK.search(name)
    if match is None:
        return None
    return int(match[1] if match[1] is not None else match[2])


def files_for_rank(names: list[str], rank: int, world_size: int) -> list[str]:
    """The files ``rank`` hashes: those every rank reads, and the shards ``k`` with ``k % world_size == rank``.

    On the topology that wrote them each rank checks its own shards; on another, every
    shard is still checked by exactly one rank.

    Example:
        >>> names = ["m.pt", "zero_pp_rank_0_o.pt", "zero_pp_rank_1_o.pt"]
        >>> files_for_rank(names, 1, 2), files_for_rank(names, 0, 1)
        (['m.pt', 'zero_pp_rank_1_o.pt'], ['m.pt', 'zero_pp_rank_0_o.pt', 'zero_pp_rank_1_o.pt'])
    """
    return [n for n in names if (k := shard_rank(n)) is None or k % world_size == rank]


def files_written_by(names: list[str], rank: int, world_size: int) -> list[str]:
    """The files ``rank`` hashes at save: its own shards; rank 0 also the shared files."""
    return [n for n in names if ((k := shard_rank(n)) is None and rank == 0) or (k is not None and k % world_size == rank)]


def resume_state_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What ``ResumeGuard`` put into a checkpoint dict (identity, schedule, position), or {}."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ResumeGuard") and isinstance(state, dict):
            return state
    return {}


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_manifest(
    checkpoint: Path, entries: dict[str, FileEntry], checkpoint_dict: dict[str, Any], hashing_s: float = 0.0
) -> Path:
    """Write ``checkpoint``'s manifest last and atomically; returns its path."""
    body = {
        "format": MANIFEST_FORMAT,
        "flashdist_version": __version__,
        "global_step": checkpoint_dict.get("global_step"),
        "resume_state": resume_state_of(checkpoint_dict),
        "hashing_s": round(hashing_s, 6),
        "written_at_unix_s": round(time.time(), 3),
        "files": {name: {"size_bytes": e.size_bytes, "sha256": e.sha256} for name, e in sorted(entries.items())},
    }
    target = manifest_path(checkpoint)
    _write_atomically(target, json.dumps(body, indent=1, default=str) + "\n")
    return target


def read_manifest(checkpoint: Path) -> Manifest | None:
    """The checkpoint's manifest; None when it has none. A manifest that does not parse raises ValueError."""
    path = manifest_path(checkpoint)
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"manifest {path.name} is unreadable ({error})") from error
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT or not isinstance(body.get("files"), dict):
        raise ValueError(f"manifest {path.name} is not a {MANIFEST_FORMAT} manifest")
    try:
        files = {str(n): FileEntry(int(e["size_bytes"]), str(e["sha256"])) for n, e in body["files"].items()}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"manifest {path.name} has a malformed file entry ({error})") from error
    return Manifest(
        files=files,
        flashdist_version=str(body.get("flashdist_version")),
        resume_state=body.get("resume_state") or {},
        global_step=body.get("global_step"),
        hashing_s=float(body.get("hashing_s") or 0.0),
    )


def check_sizes(checkpoint: Path, manifest: Manifest) -> list[Failure]:
    """Every listed file present with its size, and no unlisted file: cheap, run by every rank."""
    checkpoint = Path(checkpoint)
    root = checkpoint if checkpoint.is_dir() else checkpoint.parent
    failures = []
    for name, entry in manifest.files.items():
        try:
            size = (root / name).stat().st_size
        except FileNotFoundError:
            failures.append(Failure(checkpoint, name, "missing (listed in the manifest)"))
            continue
        if size != entry.size_bytes:
            failures.append(Failure(checkpoint, name, f"size {size} bytes, the manifest says {entry.size_bytes}"))
    if checkpoint.is_dir():
        extra = sorted(set(checkpoint_files(checkpoint)) - set(manifest.files))
        failures += [Failure(checkpoint, name, "not listed in the manifest") for name in extra]
    elif not checkpoint.exists() and not failures:
        failures.append(Failure(checkpoint, checkpoint.name, "missing"))
    return failures


def check_files(checkpoint: Path, manifest: Manifest, names: list[str]) -> list[Failure]:
    """Sizes of every file, then the SHA-256 of ``names``; nothing is unpickled."""
    failures = check_sizes(checkpoint, manifest)
    if failures:
        return failures
    checkpoint = Path(checkpoint)
    root = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for name in names:
        entry = manifest.files.get(name)
        if entry is not None and sha256_file(root / name) != entry.sha256:
            failures.append(Failure(checkpoint, name, "SHA-256 differs from the manifest"))
    return failures
