"""What the checkpoint manifest costs: SHA-256 of every file, per checkpoint save.

``python -m flashdist.bench.manifest_cost --size-mb 256 --repeats 7``

Method: a state dict of one float32 tensor of ``--size-mb`` MB is saved through
:class:`~flashdist.runtime.checkpoint.AtomicCheckpointIO` (``torch.save`` to a partial file,
``fsync``, rename, then hash and write the manifest). Each round times the whole save and reads
the hashing seconds the manifest records; it also times one plain ``torch.save`` + ``fsync`` of
the same dict right next to it (the baseline, in a shuffled order). Medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path


def measure(size_mb: int, repeats: int, directory: Path) -> dict[str, float]:
    import torch

    from flashdist.runtime.checkpoint import AtomicCheckpointIO
    from flashdist.runtime.manifest import read_manifest

    state = {"state_dict": {"w": torch.randn(size_mb * 2**20 // 4)}, "global_step": 1}
    io = AtomicCheckpointIO()
    saves, hashes, plains = [], [], []
    for round_index in range(repeats + 1):  # round 0 warms up
        order = ["flashdist", "plain"]
        random.shuffle(order)
        for which in order:
            if which == "flashdist":
                target = directory / "step=1.ckpt"
                started = time.perf_counter()
                io.save_checkpoint(state, target)
                elapsed = time.perf_counter() - started
                if round_index:
                    saves.append(elapsed)
                    hashes.append(read_manifest(target).hashing_s)
            else:
                started = time.perf_counter()
                with (directory / "plain.pt").open("wb") as handle:
                    torch.save(state, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                if round_index:
                    plains.append(time.perf_counter() - started)
    size_bytes = (directory / "step=1.ckpt").stat().st_size
    save_s, hash_s, plain_s = statistics.median(saves), statistics.median(hashes), statistics.median(plains)
    return {
        "checkpoint_mb": round(size_bytes / 2**20, 1),
        "save_with_manifest_s": round(save_s, 4),
        "hashing_s": round(hash_s, 4),
        "hashing_mb_per_s": round(size_bytes / 2**20 / hash_s, 1),
        "hashing_share_of_save_pct": round(100 * hash_s / save_s, 1),
        "plain_torch_save_fsync_s": round(plain_s, 4),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashdist.bench.manifest_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        result = measure(args.size_mb, args.repeats, Path(directory))
    print(__doc__.split("\n\n", 2)[2].strip())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
