"""Where a harness's training step goes: cProfile over one fit of a bench workload, per step.

    python -m flashdist.bench.profile_step lightning --steps 1000 [--workload mlp|gpt2] [--sort cumulative] [--top 40]

Runs one harness of :mod:`flashdist.bench.harnesses` (``torch``, ``lightning``,
``lightning_nolog``, ``flashdist``, ``hf``) in this process, one thread, after an untimed
warm-up fit, with cProfile on, and prints the functions by time with the calls and
milliseconds *per training step*. cProfile charges every Python call, so Python-heavy code
looks slower than it is: read it for where the time goes, and take the size of an effect from
the paired ``flashdist bench fit`` (e.g. ``lightning_nolog`` against ``lightning``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys

import torch


def profile(harness_name: str, steps: int, workload_name: str = "mlp") -> pstats.Stats:
    """Profile one ``steps``-step fit of ``harness_name`` on the workload; return the stats."""
    from flashdist.bench.fit_worker import _quiet
    from flashdist.bench.harnesses import harness
    from flashdist.bench.workloads import workload

    _quiet()
    # as in bench fit: one thread, and OMP_NUM_THREADS set so Lightning does not pick its own count
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    mlp = workload(workload_name)
    fit = harness(harness_name, "auto")
    fit(mlp, mlp.samples(50 * mlp.batch_size), 50, 1, "/tmp/flashdist-profile-warmup", lambda: None)  # imports, caches
    profiler = cProfile.Profile()
    profiler.enable()
    fit(mlp, mlp.samples(steps * mlp.batch_size), steps, 1, "/tmp/flashdist-profile", lambda: None)
    profiler.disable()
    return pstats.Stats(profiler)


def print_per_step(stats: pstats.Stats, steps: int, sort: str, top: int) -> None:
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((cumtime if sort == "cumulative" else tottime, calls, tottime, cumtime, f"{filename}:{line}({name})"))
    rows.sort(reverse=True)
    print(f"{'calls/step':>10} {'own ms/step':>11} {'cum ms/step':>11}  function")
    for _, calls, tottime, cumtime, where in rows[:top]:
        print(f"{calls / steps:10.1f} {1e3 * tottime / steps:11.3f} {1e3 * cumtime / steps:11.3f}  {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashdist.bench.profile_step", description=__doc__.splitlines()[0])
    parser.add_argument("harness", choices=("torch", "lightning", "lightning_nolog", "flashdist", "hf"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workload", choices=("mlp", "gpt2"), default="mlp")
    parser.add_argument("--sort", choices=("cumulative", "tottime"), default="cumulative")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    print_per_step(profile(args.harness, args.steps, args.workload), args.steps, args.sort, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
