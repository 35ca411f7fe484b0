"""``flashdist bench llm``: tokens/s of one CausalLM fine-tune under every strategy, on 2 CPU processes.

Method (also written into the JSON): the built-in ``tiny-llama`` (4 blocks of width 64), the
packed prompt/completion pairs of ``configs/data/pairs.jsonl`` (tokenized once, shared), AdamW
(lr 1e-3, weight decay 0, flashdist's kernel choice per strategy), a linear warmup (10%), no
clipping, no logger, one torch thread per rank; each variant is what a user writes:
``CausalLM(lora=...)`` + ``flashdist.Trainer(strategy=...)``. One ``torchrun`` of 2 processes
(gloo) runs every fit: one untimed round (imports, DeepSpeed's op build, and a profile of each
variant's collectives over a few steady steps), then ``rounds`` rounds, each running every
variant once in a shuffled order. A fit's figure is the median interval between optimizer steps
after the first ``warmup_steps``, on rank 0's wall clock and its process CPU clock;
tokens/s = global tokens per step ÷ the wall-clock figure. Each variant is compared with ``ddp``
(full fine-tuning) of the same round: step time ÷ ddp's, median over rounds with a 95%
percentile-bootstrap CI (flashdist/bench/stats.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flashdist.bench.fit import launch_worker
from flashdist.bench.llm_worker import BASELINE, VARIANTS
from flashdist.bench.stats import bootstrap_ci, environment, median

WORLD_SIZE = 2


def run(variants: list[str] | None = None, rounds: int = 4, steps: int = 8, warmup_steps: int = 3, profile_steps: int = 4,
        seq_length: int = 128, batch_size: int = 4, timeout_s: float = 3600,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every variant's fits in one 2-process launch; the JSON-ready result (see the module docstring).

    Example:
        >>> result = run(variants=["ddp", "fsdp+lora"], rounds=2, steps=4)  # doctest: +SKIP
        >>> result["variants"]["fsdp+lora"]["tokens_per_s"]  # doctest: +SKIP
        3101.0
    """
    names = [v.name for v in VARIANTS if variants is None or v.name in variants]
    if BASELINE not in names:
        names.insert(0, BASELINE)  # every ratio is against it
    config = {"variants": names, "rounds": rounds, "steps": steps, "warmup_steps": warmup_steps, "profile_steps": profile_steps,
              "seq_length": seq_length, "batch_size": batch_size, "seed": 0}
    env = environment()
    fits = launch_worker("flashdist.bench.llm_worker", config, WORLD_SIZE, "bench llm", timeout_s, progress)
    env["load_average_after"] = environment()["load_average_1_5_15min"]
    return {"method": __doc__.split("Method (also written into the JSON): ", 1)[1].strip(), "settings": config,
            "environment": env, **summarize(config, fits)}


def summarize(config: dict[str, Any], fits: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: step time and tokens/s over the timed rounds, the ratio to ``ddp`` paired by round, its collectives.

    ``fits`` are the worker's records (round -1 is the untimed, profiled round).
    """
    tokens_per_step = config["seq_length"] * config["batch_size"] * WORLD_SIZE
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for fit in fits:
        by_variant.setdefault(fit["variant"], {})[fit["round"]] = fit
    baseline = {r: f for r, f in by_variant[BASELINE].items() if r >= 0}
    summary: dict[str, Any] = {}
    for name in config["variants"]:
        timed = {r: f for r, f in by_variant[name].items() if r >= 0}
        wall, cpu = [f["median_ms"] for f in timed.values()], [f["cpu_median_ms"] for f in timed.values()]
        rounds = sorted(set(timed) & set(baseline))
        ratios = [timed[r]["median_ms"] / baseline[r]["median_ms"] for r in rounds]
        cpu_ratios = [timed[r]["cpu_median_ms"] / baseline[r]["cpu_median_ms"] for r in rounds]
        profiled = by_variant[name].get(-1, {})
        summary[name] = {
            "step_ms": median(wall), "step_ms_ci95": list(bootstrap_ci(wall)),
            "tokens_per_s": tokens_per_step / (median(wall) / 1e3),
            "cpu_step_ms": median(cpu),
            "step_vs_ddp": median(ratios), "step_vs_ddp_ci95": list(bootstrap_ci(ratios)), "per_round_vs_ddp": ratios,
            "cpu_step_vs_ddp": median(cpu_ratios), "cpu_step_vs_ddp_ci95": list(bootstrap_ci(cpu_ratios)),
            "trainable_parameters": next(iter(timed.values()))["trainable_parameters"],
            "collectives_per_step": profiled.get("collectives", {}),
            "top_ops_ms_per_step": profiled.get("top_ops", []),
            "fit_wall_s": median([f["fit_wall_s"] for f in timed.values()]),
        }
    return {"tokens_per_step": tokens_per_step, "rounds_timed": len(baseline), "variants": summary}


def collectives_text(collectives: dict[str, dict[str, float]]) -> str:
    """``9 all_gather (6.1 ms) + 4 reduce_scatter (4.1 ms)``: calls and blocking time per step.

    Example:
        >>> collectives_text({"all_gather": {"calls_per_step": 9.0, "ms_per_step": 6.11}})
        '9 all_gather (6.1 ms)'
    """
    parts = [f"{entry['calls_per_step']:g} {kind} ({entry['ms_per_step']:.1f} ms)" for kind, entry in collectives.items()]
    return " + ".join(parts) or "-"


def print_table(result: dict[str, Any], console: Any) -> None:
    """The table the docs quote, the settings, the load and the method."""
    from rich.table import Table

    settings = result["settings"]
    table = Table(title=f"bench llm: tiny-llama, {WORLD_SIZE} CPU processes (gloo), {result['tokens_per_step']} tokens/step, "
                        f"median over {result['rounds_timed']} paired rounds")
    for column in ("variant", "trainable params", "tokens/s", "step ms [95% CI]", "step ÷ ddp [95% CI]", "CPU ms",
                   "CPU step ÷ ddp [95% CI]", "collectives per step (rank 0, blocking ms)"):
        # the variant's name whole (a 150-column log would cut "fsdp+lora/keep-gathered"); the collectives wrap
        table.add_column(column, justify="left" if column.startswith(("variant", "collectives")) else "right", no_wrap=column == "variant")
    for name, row in result["variants"].items():
        low, high = row["step_ms_ci95"]
        r_low, r_high = row["step_vs_ddp_ci95"]
        c_low, c_high = row["cpu_step_vs_ddp_ci95"]
        table.add_row(name, f"{row['trainable_parameters']:,}", f"{row['tokens_per_s']:,.0f}", f"{row['step_ms']:.0f} [{low:.0f}, {high:.0f}]",
                      f"{row['step_vs_ddp']:.2f} [{r_low:.2f}, {r_high:.2f}]", f"{row['cpu_step_ms']:.0f}",
                      f"{row['cpu_step_vs_ddp']:.2f} [{c_low:.2f}, {c_high:.2f}]",
                      collectives_text(row["collectives_per_step"]))
    console.print(table)
    env = result["environment"]
    console.print(f"settings: {settings}; load average (1, 5, 15 min) before {env['load_average_1_5_15min']}, "
                  f"after {env.get('load_average_after')}; commit {env['git_commit']}")
    console.print(f"method: {result['method']}")
