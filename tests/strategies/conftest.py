"""Build DeepSpeed's JIT ops once per session, before any 2-process fit needs them.

DeepSpeed compiles ``cpu_adam``, ``fused_adam`` (its CPU build) and ``deepspeed_shm_comm``
with ninja/gcc on first use and caches them under ``~/.cache/torch_extensions`` (or
``$TORCH_EXTENSIONS_DIR``), which survives a fresh clone on the same machine. Without this
fixture the first fit's two ranks would build them inside the fit's timeout, racing for the
same lock (minutes on 2 busy cores); with it, each op is built once, serially, here, and is a
load from the cache (well under a second) everywhere else.
"""

from __future__ import annotations

import time

import pytest

_OPS = ("CPUAdamBuilder", "FusedAdamBuilder", "ShareMemCommBuilder")


@pytest.fixture(scope="session")
def deepspeed_ops_built() -> dict[str, float]:
    """Seconds each op took to build or load, for the log of a slow first run."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    seconds: dict[str, float] = {}
    for name in _OPS:
        builder = accelerator.create_op_builder(name)
        if builder is None or not builder.is_compatible(verbose=False):
            continue
        start = time.perf_counter()
        builder.load(verbose=False)
        seconds[name] = round(time.perf_counter() - start, 2)
    return seconds
