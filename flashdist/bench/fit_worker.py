"""One process of ``flashdist bench fit``: runs every variant's fits, interleaved, and times each step.

Run by :mod:`flashdist.bench.fit` as ``python -m flashdist.bench.fit_worker <config.json>``
(one process) or under ``torchrun`` (several; every rank runs the same sequence of fits, as
each fit's collectives require, and rank 0 writes the timings).

A variant is ``<strategy>/<harness>`` (see :mod:`flashdist.bench.harnesses`): in one process
strategy ``single`` with harnesses ``torch`` (the hand-written loop), ``lightning``,
``flashdist`` and ``hf``; in several, ``ddp`` with the same four (``torch`` then wraps the model
in DistributedDataParallel), ``deepspeed`` with ``deepspeed`` (the hand-written engine loop),
``lightning_ds`` (plain Lightning's own DeepSpeedStrategy) and ``flashdist``, and ``fsdp`` with
``fsdp2`` (the hand-written ``fully_shard`` loop), ``lightning_fsdp2`` (plain Lightning's own
ModelParallelStrategy) and ``flashdist``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

# strategy -> harnesses compared under it; the first is the hand-written baseline.
GROUPS_ONE_PROCESS: dict[str, tuple[str, ...]] = {"single": ("torch", "lightning", "flashdist", "hf")}
GROUPS_MULTI_PROCESS: dict[str, tuple[str, ...]] = {
    "ddp": ("torch", "lightning", "flashdist", "hf"),
    "deepspeed": ("deepspeed", "lightning_ds", "flashdist"),
    "fsdp": ("fsdp2", "lightning_fsdp2", "flashdist"),
}
# Not in the default comparison: plain Lightning without self.log, which measures what logging costs.
EXTRA_HARNESSES = {"single": ("lightning_nolog",), "ddp": ("lightning_nolog",), "deepspeed": ("lightning_ds_nolog",),
                   "fsdp": ("lightning_fsdp2_nolog",)}
FLASHDIST_STRATEGY = {"single": "auto", "ddp": "ddp", "deepspeed": "deepspeed_stage_2", "fsdp": "fsdp"}


def groups_for(devices: int, strategies: list[str] | None = None, harnesses: list[str] | None = None) -> dict[str, list[str]]:
    """The variant groups for a process count, optionally narrowed to some strategies / harnesses.

    Example:
        >>> groups_for(2, strategies=["deepspeed"])
        {'deepspeed': ['deepspeed', 'lightning_ds', 'flashdist']}
    """
    table = GROUPS_ONE_PROCESS if devices == 1 else GROUPS_MULTI_PROCESS
    chosen = {s: list(h) for s, h in table.items() if strategies is None or s in strategies}
    if harnesses is not None:
        extra = {s: [h for h in EXTRA_HARNESSES.get(s, ()) if h in harnesses] for s in chosen}
        chosen = {s: [h for h in hs if h in harnesses or h == hs[0]] + extra[s] for s, hs in chosen.items()}
    return {s: hs for s, hs in chosen.items() if len(hs) > 1}


class StepStamps:
    """Wall and process-CPU timestamps at the end of every training step.

    On ``cuda`` each stamp also records a CUDA event on the current stream: the host returns from a
    step before the GPU has run it, so the wall clock is read from the events once the fit is over
    (:meth:`finish`), when the GPU reached the end of each step, without a host sync per step.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.wall_ns: list[int] = []
        self.cpu_ns: list[int] = []
        self.events: list[Any] | None = [] if device == "cuda" else None

    def __call__(self) -> None:
        self.wall_ns.append(time.perf_counter_ns())
        # CPU time of the whole process (gloo's and DeepSpeed's threads included): what the step
        # costs, even when other jobs on the machine stretch the wall-clock time.
        self.cpu_ns.append(time.process_time_ns())
        if self.events is not None:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)

    def finish(self) -> None:
        """On CUDA: the step ends as the GPU reached them (ns from the first), in place of the host's."""
        if not self.events:
            return
        torch.cuda.synchronize()
        first = self.events[0]
        self.wall_ns = [round(first.elapsed_time(event) * 1e6) for event in self.events]


def one_fit(variant: str, config: dict[str, Any], samples: Any, total_steps: int, world: int) -> dict[str, Any]:
    from flashdist.bench.harnesses import harness
    from flashdist.bench.workloads import workload

    strategy, name = variant.split("/")
    device = config.get("device", "cpu")
    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    stamps = StepStamps(device)
    with tempfile.TemporaryDirectory(prefix="flashdist-bench-") as root:
        started = time.perf_counter()
        harness(name, FLASHDIST_STRATEGY[strategy])(workload(config["workload"], device), samples, total_steps, world, root, stamps)
        stamps.finish()
        wall_s = time.perf_counter() - started
    warmup = config["warmup_steps"]
    wall_us, cpu_us = _intervals_us(stamps.wall_ns[warmup:]), _intervals_us(stamps.cpu_ns[warmup:])
    return {
        "variant": variant,
        "device": device,
        "steps_taken": len(stamps.wall_ns),
        "timed_intervals": len(wall_us),
        "median_us": _median(wall_us),
        "mean_us": sum(wall_us) / len(wall_us),
        "cpu_median_us": _median(cpu_us),
        "fit_wall_s": wall_s,
    }


def _intervals_us(stamps_ns: list[int]) -> list[float]:
    return [(b - a) / 1e3 for a, b in zip(stamps_ns, stamps_ns[1:])]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def round_order(groups: dict[str, list[str]], rng: random.Random) -> list[str]:
    """The strategies in a shuffled order; per strategy, its harnesses back to back, shuffled.

    Fits compared with each other (same strategy) run next to each other, so they share the
    machine's state (load, clocks, caches) best.

    Example:
        >>> round_order({"ddp": ["torch", "flashdist"], "fsdp": ["fsdp2", "flashdist"]}, random.Random(0))
        ['ddp/torch', 'ddp/flashdist', 'fsdp/flashdist', 'fsdp/fsdp2']
    """
    strategies = list(groups)
    rng.shuffle(strategies)
    order: list[str] = []
    for strategy in strategies:
        harnesses = list(groups[strategy])
        rng.shuffle(harnesses)
        order += [f"{strategy}/{h}" for h in harnesses]
    return order


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "DeepSpeed", "deepspeed", "transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)  # per-fit banners would flood the log
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet_flashdist_fits() -> None:
    """Dependencies quiet, and flashdist's own per-fit plan and run table too: a bench runs many fits."""
    _quiet()
    logging.getLogger("flashdist").setLevel(logging.ERROR)


def main(config_path: str) -> None:
    from flashdist.bench.workloads import workload

    config = json.loads(Path(config_path).read_text())
    torch.set_num_threads(config.get("torch_threads", 1))
    _quiet()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    total_steps = config["warmup_steps"] + config["steps"] + 1
    samples = workload(config["workload"]).samples(total_steps * workload(config["workload"]).batch_size * world)
    fits: list[dict[str, Any]] = []
    order_rng = random.Random(config["seed"])  # same seed on every rank: the same order everywhere
    for round_index in range(-config["warmup_rounds"], config["repeats"]):
        for variant in round_order(config["groups"], order_rng):
            record = one_fit(variant, config, samples, total_steps, world)
            if round_index >= 0:
                fits.append({**record, "round": round_index})
        if rank == 0:
            done = f"round {round_index + 1}/{config['repeats']}"
            print(f"[bench fit] {config['workload']} devices={world} {done} done", file=sys.stderr, flush=True)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps({"fits": fits, "world_size": world}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
