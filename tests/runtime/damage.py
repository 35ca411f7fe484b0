"""Real damage to real checkpoint files: truncation, a flipped byte at a chosen place, a planted payload."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import torch

from flashdist.runtime.manifest import checkpoint_files, hash_files, manifest_path, read_manifest, write_manifest


def member_offset(archive: Path, suffix: str) -> int:
    """Byte offset of the data of the first zip member whose name ends with ``suffix`` (torch's
    zip files store members uncompressed: a byte there is a byte of the tensor or the pickle)."""
    with zipfile.ZipFile(archive) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(suffix) and i.file_size > 0)
    with archive.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)


class Payload:
    """Unpickling this creates ``marker``: proof that code from the checkpoint ran (nothing else)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payload(file: Path, marker: Path, key: str = "flashdist_test_payload") -> None:
    """Add a :class:`Payload` to a torch-saved dict (a file this test wrote itself)."""
    state = torch.load(file, map_location="cpu", weights_only=False)
    state[key] = Payload(marker)
    torch.save(state, file)


def rehash(checkpoint: Path) -> None:
    """Rewrite the manifest to match the files: what an attacker who can write the directory can do."""
    manifest = read_manifest(checkpoint)
    root = checkpoint if checkpoint.is_dir() else checkpoint.parent
    entries = hash_files(root, checkpoint_files(checkpoint))
    write_manifest(checkpoint, entries, {"global_step": manifest.global_step})
    assert manifest_path(checkpoint).exists()
