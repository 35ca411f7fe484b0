"""Timing and statistics shared by the benchmarks: no numpy/scipy needed, seeded, small."""

from __future__ import annotations

import gc
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any


CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


def time_calls_us(fn: Callable[[], Any], calls: int, clock: str = "wall") -> float:
    """µs per call of ``fn``, over ``calls`` back-to-back calls with the garbage collector off.

    The collector is off while timing (as ``timeit`` does) so a collection triggered by
    one candidate's allocations is not charged to whichever candidate happens to run next.
    ``clock="cpu"`` reads this thread's CPU time: on a shared machine, time spent waiting
    for a core while other jobs run is then not charged to ``fn``.

    Example:
        >>> time_calls_us(lambda: None, 1000) > 0
        True
    """
    now = CLOCKS[clock]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = now()
        for _ in repeat(None, calls):
            fn()
        elapsed_ns = now() - start
    finally:
        if was_enabled:
            gc.enable()
    return elapsed_ns / calls / 1e3


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def iqr(values: Sequence[float]) -> float:
    """Interquartile range: the spread reported next to every median."""
    return quantile(values, 0.75) - quantile(values, 0.25)


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = median,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` (seeded: reruns agree).

    Example:
        >>> low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
        >>> low <= 3.0 <= high
        True
    """
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2
    return quantile(stats, tail), quantile(stats, 1 - tail)


def load_average() -> tuple[float, float, float] | None:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """What the numbers were taken on: versions, CPU count, load, commit."""
    import torch

    versions: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("lightning", "transformers", "deepspeed"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # not installed, or fails to import: say so rather than stop
            versions[module] = None
    return {
        **versions,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": load_average(),
        "git_commit": _git_commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _git_commit() -> str | None:
    try:
        command = ["git", "rev-parse", "--short", "HEAD"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except Exception:  # not a git checkout: the commit is simply unknown
        return None
