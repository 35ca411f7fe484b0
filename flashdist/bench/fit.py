"""``flashdist bench fit``: flashdist's cost per training step against the limit and the alternatives.

Method (also written into the JSON): per workload (:mod:`flashdist.bench.workloads`) and
process count, one worker process (or ``torchrun`` with that many ranks) runs every variant
``<strategy>/<harness>`` (:mod:`flashdist.bench.fit_worker`, :mod:`flashdist.bench.harnesses`)
as whole one-epoch fits: ``warmup_rounds`` untimed rounds, then ``repeats`` rounds, each
running every variant once, the strategies in a shuffled order and, per strategy, its
harnesses back to back in a shuffled order. Each harness stamps the end of every training
step; the first ``warmup_steps`` are dropped and the fit's figure is its median interval (µs
per whole loop iteration), on the wall clock and on the process CPU clock. A variant's figure
is the median of its fits with a percentile-bootstrap 95% CI. Comparisons are paired by round:
per round, harness ÷ the strategy's hand-written loop, and flashdist ÷ each other harness;
median over rounds with a bootstrap CI.
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

from flashdist.bench.device import check_device, device_name
from flashdist.bench.fit_worker import groups_for
from flashdist.bench.stats import bootstrap_ci, environment, median


def run(
    workloads: Iterable[str] = ("mlp", "gpt2"),
    devices: Iterable[int] = (1, 2),
    strategies: list[str] | None = None,
    harnesses: list[str] | None = None,
    steps: int | None = None,
    warmup_steps: int | None = None,
    repeats: int = 10,
    warmup_rounds: int = 1,
    seed: int = 0,
    timeout_s: float = 7200,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the fit benchmark for each workload and process count; return the JSON-ready result.

    ``steps`` / ``warmup_steps`` default per workload (mlp 300 / 50, gpt2 60 / 10). ``device``
    ``"cuda"`` runs the same harnesses with the model and batches on the GPU (one per process),
    timed by CUDA events; a device this machine lacks is a ConfigError before anything runs.

    Example:
        >>> result = run(workloads=["mlp"], devices=(1,), steps=20, warmup_steps=5, repeats=2)  # doctest: +SKIP
        >>> result["configs"][0]["ratios"]["single"]["flashdist / torch"]["median"]  # doctest: +SKIP
        1.8
    """
    device = check_device(device, processes=max(int(d) for d in devices))
    env = {**environment(), "device": device_name(device)}
    configs = []
    for name in workloads:
        for device_count in devices:
            groups = groups_for(int(device_count), strategies, harnesses)
            if not groups:
                continue
            config = dict(
                workload=name,
                devices=int(device_count),
                groups=groups,
                steps=steps if steps is not None else DEFAULT_STEPS[name],
                warmup_steps=warmup_steps if warmup_steps is not None else DEFAULT_WARMUP_STEPS[name],
                repeats=repeats,
                warmup_rounds=warmup_rounds,
                seed=seed,
                torch_threads=1,
                device=device,
            )
            fits = _launch(config, timeout_s, progress)
            configs.append(summarize(config, fits))
    env["load_average_after"] = environment()["load_average_1_5_15min"]
    return {"method": method_text(repeats, warmup_rounds, device), "environment": env, "configs": configs}


DEFAULT_STEPS = {"mlp": 300, "gpt2": 60}
DEFAULT_WARMUP_STEPS = {"mlp": 50, "gpt2": 10}


def _launch(config: dict[str, Any], timeout_s: float, progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    return launch_worker("flashdist.bench.fit_worker", config, config["devices"], f"bench fit {config['workload']}", timeout_s, progress)


def launch_worker(module: str, config: dict[str, Any], processes: int, label: str, timeout_s: float,
                  progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """Run a bench worker (``python -m module config.json``; under torchrun for several processes) and return its fits.

    The worker gets ``config`` plus ``out`` (where it writes ``{"fits": [...]}``) and ``scratch``
    (a folder of its own, removed afterwards), one thread per process.
    """
    with tempfile.TemporaryDirectory(prefix="flashdist-bench-") as tmp:
        config = {**config, "out": str(Path(tmp) / "fits.json"), "scratch": tmp}
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        worker = ["-m", module, str(config_path)]
        if processes == 1:
            command = [sys.executable, *worker]
        else:
            torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
            command = [sys.executable, *torchrun, *worker]
        if progress:
            progress(f"{label}: {' '.join(command)}")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"{label} worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return json.loads(Path(config["out"]).read_text())["fits"]


def summarize(config: dict[str, Any], fits: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-variant medians with CIs, and the round-paired ratios per strategy."""
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for fit in fits:
        by_variant.setdefault(fit["variant"], {})[fit["round"]] = fit
    variants = {}
    for strategy, harnesses in config["groups"].items():
        for harness in harnesses:
            name = f"{strategy}/{harness}"
            runs = list(by_variant[name].values())
            medians, cpu_medians = [f["median_us"] for f in runs], [f["cpu_median_us"] for f in runs]
            variants[name] = {
                "us_per_step": median(medians),
                "ci95": list(bootstrap_ci(medians)),
                "per_fit_median_us": medians,
                "cpu_us_per_step": median(cpu_medians),
                "cpu_ci95": list(bootstrap_ci(cpu_medians)),
                "fit_wall_s": median([f["fit_wall_s"] for f in runs]),
                "steps_per_fit": runs[0]["steps_taken"],
            }

    def paired(a: str, b: str) -> dict[str, Any]:
        rounds = sorted(set(by_variant[a]) & set(by_variant[b]))
        wall = [by_variant[a][r]["median_us"] / by_variant[b][r]["median_us"] for r in rounds]
        cpu = [by_variant[a][r]["cpu_median_us"] / by_variant[b][r]["cpu_median_us"] for r in rounds]
        return per_round_stats(wall, cpu)

    ratios: dict[str, dict[str, Any]] = {}
    for strategy, harnesses in config["groups"].items():
        baseline, others = harnesses[0], harnesses[1:]
        pairs = [(h, baseline) for h in others]
        if "flashdist" in others:
            pairs += [("flashdist", h) for h in others if h != "flashdist"]
        ratios[strategy] = {f"{a} / {b}": paired(f"{strategy}/{a}", f"{strategy}/{b}") for a, b in pairs}
    return {
        "workload": config["workload"],
        "devices": config["devices"],
        "device": config.get("device", "cpu"),
        "steps_timed_per_fit": config["steps"],
        "warmup_steps_dropped": config["warmup_steps"],
        "rounds": config["repeats"],
        "variants": variants,
        "ratios": ratios,
    }


def per_round_stats(values: list[float], cpu: list[float]) -> dict[str, Any]:
    """A per-round comparison (wall and CPU clock): its median and bootstrap 95% CI over rounds."""
    return {
        "median": median(values),
        "ci95": list(bootstrap_ci(values)),
        "per_round": values,
        "cpu_median": median(cpu),
        "cpu_ci95": list(bootstrap_ci(cpu)),
    }


def method_text(repeats: int, warmup_rounds: int, device: str = "cpu") -> str:
    on_device = ("Device: cpu, torch threads 1 per process. " if device == "cpu" else
                 "Device: cuda, one GPU per process (nccl at 2), model and batches on it; the same harnesses and "
                 "schedule as on cpu; the wall clock of a step is read from CUDA events recorded at each step's end "
                 "(no host sync per step), the CPU clock from the process. ")
    return on_device + (
        "Workloads: mlp = 32-64-4 MLP, batch 16/rank, cross-entropy; gpt2 = 2-layer GPT-2 (width 64, vocab 256) from a "
        "config, batch 8 x 32 tokens/rank, next-token loss. All harnesses: AdamW lr 1e-3, weight decay 0, no clipping, "
        "linear warmup (10%, ceil) to zero over one epoch, torch threads 1 per process, the same seeded weights and data. "
        "Harnesses: torch = hand-written loop (DistributedDataParallel at 2 processes); deepspeed = hand-written "
        "deepspeed.initialize / engine.backward / engine.step, ZeRO-2 with Lightning's ZeRO defaults; fsdp2 = hand-written "
        "fully_shard per block then root, AdamW with the kernel flag flashdist's FSDP route picks (fused on CPU); "
        "lightning = plain lightning.Trainer + a LightningModule; lightning_ds = the same module under Lightning's "
        "DeepSpeedStrategy(stage=2), CPU checks lifted only; lightning_fsdp2 = the same module under Lightning's "
        "ModelParallelStrategy (data-parallel over every rank), fully_shard in configure_model as in fsdp2, the same "
        "AdamW kernel; *_nolog = without self.log; flashdist = "
        "flashdist.Trainer + Task (fast linear warmup); hf = transformers.Trainer (accelerate). "
        f"{warmup_rounds} untimed round(s), then {repeats} rounds; each round runs every variant once: strategies shuffled, "
        "per strategy its harnesses back to back, shuffled. Per fit: a stamp at the end of every training step; the "
        "first steps dropped; the fit's value = median interval (us/step), wall clock and process CPU clock. Variant = "
        "median over fits, 95% percentile-bootstrap CI. Ratios paired by round: harness / hand-written baseline of the "
        "same strategy, and flashdist / each other harness; median over rounds, bootstrap CI. 1 process: a fresh python "
        "process; 2: torchrun --standalone, gloo, rank 0's timings."
    )
