"""``flashdist bench fit``: what a scheduler, and flashdist itself, add to each step of a real fit.

Method (also written into the JSON): per process count, one worker process (or ``torchrun``
with that many ranks) runs :data:`~flashdist.bench.fit_worker.VARIANTS`, the same tiny model
and data in each, as whole fits: ``warmup_rounds`` untimed rounds, then ``repeats`` rounds,
every round in a freshly shuffled order (interleaved, so machine-load drift hits all
variants alike), with each flashdist fit next to the plain-Lightning fit it is compared
with. Inside each fit a callback stamps the end of every training batch; the first
``warmup_steps`` are dropped and the fit's figure is the median interval (µs per whole
loop iteration: data, forward, backward, optimizer, scheduler, hooks, logging). A
variant's µs/step is the median of its fits, with a percentile-bootstrap 95% CI. The
comparisons are paired by round: scheduler overhead = fit(schedule) − fit(none) of the same
harness; harness ratio = flashdist fit / plain Lightning fit with the same schedule, and
``all``: flashdist's three fits over Lightning's three, per round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flashdist.bench.fit_worker import HARNESSES, SCHEDULES, VARIANTS
from flashdist.bench.stats import bootstrap_ci, environment, median


def run(
    devices: Iterable[int] = (1, 2),
    strategy: str | None = None,
    steps: int = 400,
    warmup_steps: int = 50,
    repeats: int = 8,
    warmup_rounds: int = 1,
    batch_size: int = 8,
    hidden: int = 32,
    seed: int = 0,
    timeout_s: float = 1800,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the fit benchmark for each process count; return the JSON-ready result.

    Example:
        >>> result = run(devices=(1,), steps=20, warmup_steps=5, repeats=2, warmup_rounds=0)  # doctest: +SKIP
        >>> result["configs"][0]["harness_ratio"]["fast"]["median"]  # doctest: +SKIP
        1.004
    """
    env = environment()
    configs = []
    for device_count in devices:
        chosen = strategy or ("auto" if device_count == 1 else "ddp")
        config = dict(
            devices=int(device_count),
            strategy=chosen,
            steps=steps,
            warmup_steps=warmup_steps,
            repeats=repeats,
            warmup_rounds=warmup_rounds,
            batch_size=batch_size,
            hidden=hidden,
            seed=seed,
            variants=list(VARIANTS),
            torch_threads=1,
        )
        fits = _launch(config, timeout_s, progress)
        configs.append(summarize(config, fits))
    env["load_average_after"] = environment()["load_average_1_5_15min"]
    method = method_text(steps, warmup_steps, repeats, warmup_rounds, batch_size, hidden)
    return {"method": method, "environment": env, "configs": configs}


def _launch(config: dict[str, Any], timeout_s: float, progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="flashdist-bench-fit-") as tmp:
        config = {**config, "out": str(Path(tmp) / "fits.json")}
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        worker = ["-m", "flashdist.bench.fit_worker", str(config_path)]
        if config["devices"] == 1:
            command = [sys.executable, *worker]
        else:
            torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config['devices']}"]
            command = [sys.executable, *torchrun, *worker]
        if progress:
            progress(f"bench fit: {' '.join(command)}")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"bench fit worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return json.loads(Path(config["out"]).read_text())["fits"]


def summarize(config: dict[str, Any], fits: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-variant medians with CIs, and the round-paired comparisons."""
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for fit in fits:
        by_variant.setdefault(fit["variant"], {})[fit["round"]] = fit
    variants = {}
    for name in config["variants"]:
        medians = [f["median_us"] for f in by_variant[name].values()]
        cpu_medians = [f["cpu_median_us"] for f in by_variant[name].values()]
        variants[name] = {
            "us_per_step": median(medians),
            "ci95": list(bootstrap_ci(medians)),
            "per_fit_median_us": medians,
            "cpu_us_per_step": median(cpu_medians),
            "cpu_ci95": list(bootstrap_ci(cpu_medians)),
            "fit_wall_s": median([f["fit_wall_s"] for f in by_variant[name].values()]),
            "steps_per_fit": by_variant[name][0]["steps_taken"],
        }

    def paired(a: str, b: str, op: Callable[[float, float], float]) -> dict[str, Any]:
        rounds = sorted(set(by_variant[a]) & set(by_variant[b]))
        values = [op(by_variant[a][r]["median_us"], by_variant[b][r]["median_us"]) for r in rounds]
        cpu = [op(by_variant[a][r]["cpu_median_us"], by_variant[b][r]["cpu_median_us"]) for r in rounds]
        return per_round_stats(values, cpu)

    overhead = {
        f"{harness}:{schedule}": paired(f"{harness}:{schedule}", f"{harness}:none", lambda x, y: x - y)
        for harness in HARNESSES
        for schedule in SCHEDULES
        if schedule != "none"
    }
    ratio = {schedule: paired(f"flashdist:{schedule}", f"lightning:{schedule}", lambda x, y: x / y) for schedule in SCHEDULES}
    ratio["all"] = pooled_ratio(by_variant)
    return {
        "devices": config["devices"],
        "strategy": config["strategy"],
        "variants": variants,
        "scheduler_overhead_us": overhead,
        "harness_ratio": ratio,
    }


def pooled_ratio(by_variant: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """flashdist / lightning over all schedules: per round, the sum of flashdist's fits over the
    sum of Lightning's (three pairs, so a tighter interval); median and CI over rounds."""
    rounds = sorted(set.intersection(*(set(fits) for fits in by_variant.values())))

    def per_round(key: str) -> list[float]:
        return [
            sum(by_variant[f"flashdist:{s}"][r][key] for s in SCHEDULES)
            / sum(by_variant[f"lightning:{s}"][r][key] for s in SCHEDULES)
            for r in rounds
        ]

    return per_round_stats(per_round("median_us"), per_round("cpu_median_us"))


def per_round_stats(values: list[float], cpu: list[float]) -> dict[str, Any]:
    """A per-round comparison (wall and CPU clock): its median and bootstrap 95% CI over rounds."""
    return {
        "median": median(values),
        "ci95": list(bootstrap_ci(values)),
        "per_round": values,
        "cpu_median": median(cpu),
        "cpu_ci95": list(bootstrap_ci(cpu)),
    }


def method_text(steps: int, warmup_steps: int, repeats: int, warmup_rounds: int, batch_size: int, hidden: int) -> str:
    return (
        f"Tiny MLP (16-{hidden}-LayerNorm-ReLU-2), AdamW lr 0.01, batch {batch_size}/rank, one epoch of "
        f"{warmup_steps + steps + 1} steps per fit, torch threads 1 per process. Variants harness:schedule with "
        f"harness in (lightning = plain lightning.Trainer + equivalent LightningModule, flashdist = flashdist.Trainer "
        f"+ Task) and schedule in (none, hf = transformers LambdaLR linear warmup, fast = flashdist closed form), "
        f"same linear warmup (10%, ceil) and total. {warmup_rounds} untimed round(s), then {repeats} rounds; each "
        f"round runs every variant once: the schedules in a shuffled order, and per schedule its two harnesses "
        f"back to back in a shuffled order (each compared pair adjacent in time). Per fit: a callback stamps each "
        f"on_train_batch_end; the first {warmup_steps} steps are dropped; the fit's value is the median interval "
        f"(us/step), on the wall clock and on the process CPU clock (time.process_time_ns, all threads; robust to "
        f"other jobs' load). Variant value = median over fits, 95% percentile-bootstrap CI. Paired by round: scheduler "
        f"overhead = fit(schedule) - fit(none) in the same harness (us); harness ratio = flashdist / lightning "
        f"with the same schedule, and 'all' = sum of flashdist's three fits / sum of lightning's, per round. "
        f"1 process: a fresh python process; N>1: torchrun --standalone, DDP (gloo), rank 0's timings."
    )
