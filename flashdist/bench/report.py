"""Tables (rich) and bar charts (matplotlib, Agg) for the benchmark results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMPLEMENTATION_COLOURS = {
    "flashdist": "#2a9d8f",
    "transformers": "#e9c46a",
    "torch": "#264653",
    "deepspeed": "#e76f51",
    "user": "#8d6cab",
}


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def print_scheduler_table(result: dict[str, Any], console: Any = None) -> None:
    """One row per scheduler: µs/step (± IQR) and × direct assignment (paired, with its 95% CI), per group count."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    groups = list(result["baseline_us_per_step"])
    title = "scheduler.step() cost: µs per step (median ± IQR over rounds), and × direct assignment (paired by block)"
    if result.get("lr", "float") != "float":  # the tensor-LR mode: each call also runs the (captured) optimizer step
        title = f"LRs as tensors ({result['lr']}): µs per step() + optimizer step, and × direct tensor assignment + the same step"
    table = Table(title=title)
    table.add_column("scheduler")
    table.add_column("impl")
    for g in groups:
        table.add_column(f"{g} grp µs", justify="right")
        table.add_column("× direct [95% CI]", justify="right")
    baseline_cells = [cell for g in groups for cell in (f"{result['baseline_us_per_step'][g]:.3f}", "1.00")]
    table.add_row("direct assignment (baseline)", "-", *baseline_cells)
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in result["results"]:
        rows.setdefault((row["scheduler"], row["implementation"]), {})[str(row["groups"])] = row
    for (name, implementation), by_group in rows.items():
        cells: list[Any] = []
        for g in groups:
            row = by_group.get(g)
            if row is None:
                cells += ["-", "-"]
                continue
            low, high = row["ratio_ci95"]
            cells += [f"{row['us_per_step']:.3f} ± {row['spread']:.3f}", f"{row['ratio_to_direct']:.2f} [{low:.2f}, {high:.2f}]"]
        style = "bold green" if implementation == "flashdist" else None
        table.add_row(Text(name), implementation, *cells, style=style)  # Text: '[steplr, {...}]' is no markup tag
    console.print(table)
    print_same_schedule_table(result, groups, console)
    for skip in result.get("skipped", []):
        console.print(Text(f"skipped {skip['scheduler']}: {skip['reason']}"))
    console.print(f"[dim]method: {result['method']}[/dim]")
    console.print(f"[dim]environment: {json.dumps(result['environment'])}[/dim]")


def print_same_schedule_table(result: dict[str, Any], groups: list[str], console: Any) -> None:
    """The fast path against direct assignment of its own schedule: what the scheduler machinery adds."""
    from rich.table import Table
    from rich.text import Text

    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for row in result["results"]:
        if "ratio_to_same_schedule_direct" in row:
            rows.setdefault(row["scheduler"], {})[str(row["groups"])] = row
    if not rows:
        return
    table = Table(title="fast path ÷ direct assignment of the same schedule (paired by block, 95% CI)")
    table.add_column("scheduler")
    for g in groups:
        table.add_column(f"{g} grp", justify="right")
    for name, by_group in rows.items():
        cells = []
        for g in groups:
            row = by_group.get(g)
            if row is None:
                cells.append("-")
                continue
            low, high = row["ratio_to_same_schedule_direct_ci95"]
            cells.append(f"{row['ratio_to_same_schedule_direct']:.2f} [{low:.2f}, {high:.2f}]")
        table.add_row(Text(name), *cells, style="green")
    console.print(table)


def plot_schedulers(result: dict[str, Any], path: str | Path) -> Path:
    """Horizontal bars per scheduler, one panel per group count, log µs axis, baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = list(result["baseline_us_per_step"])
    names: list[tuple[str, str]] = []
    for row in result["results"]:
        if (row["scheduler"], row["implementation"]) not in names:
            names.append((row["scheduler"], row["implementation"]))
    height = max(3.0, 0.22 * len(names) + 1.5)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups) + 3.0, height), sharey=True, squeeze=False)
    for ax, g in zip(axes[0], groups):
        by_name = {(r["scheduler"], r["implementation"]): r for r in result["results"] if str(r["groups"]) == g}
        values = [by_name[n]["us_per_step"] if n in by_name else 0.0 for n in names]
        spreads = [by_name[n]["spread"] if n in by_name else 0.0 for n in names]
        colours = [IMPLEMENTATION_COLOURS.get(impl, "#999999") for _, impl in names]
        ax.barh(range(len(names)), values, xerr=spreads, color=colours, error_kw={"elinewidth": 0.6, "ecolor": "#555555"})
        baseline = result["baseline_us_per_step"][g]
        ax.axvline(baseline, color="black", linestyle="--", linewidth=1)
        ax.axvline(1.5 * baseline, color="black", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(f"{g} param group{'s' if g != '1' else ''}")
        ax.set_xlabel("µs per step() (log)")
        ax.grid(axis="x", which="both", alpha=0.25)
    axes[0][0].set_yticks(range(len(names)))
    axes[0][0].set_yticklabels([n for n, _ in names], fontsize=7)
    axes[0][0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in IMPLEMENTATION_COLOURS.values()]
    handles += [plt.Line2D([0], [0], color="black", linestyle="--"), plt.Line2D([0], [0], color="black", linestyle=":")]
    labels = [*IMPLEMENTATION_COLOURS, "direct assignment", "1.5 × direct"]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("flashdist bench schedulers: cost of one scheduler.step() (median, IQR bars)")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_fit_table(result: dict[str, Any], console: Any = None) -> None:
    """Per workload and process count: µs/step per variant with its 95% CI, then the paired ratios."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for config in result["configs"]:
        title = (f"fit {config['workload']}, {config['devices']} process(es): µs per training step "
                 f"({config['rounds']} rounds, {config['steps_timed_per_fit']} steps timed per fit)")
        table = Table(title=title)
        for column in ("variant", "wall µs/step", "95% CI", "CPU µs/step", "95% CI ", "fit wall s"):
            table.add_column(column, justify="right" if column != "variant" else "left")
        for name, stats in config["variants"].items():
            low, high = stats["ci95"]
            cpu_low, cpu_high = stats["cpu_ci95"]
            style = "bold green" if name.endswith("/flashdist") else None
            table.add_row(name, f"{stats['us_per_step']:.1f}", f"[{low:.1f}, {high:.1f}]", f"{stats['cpu_us_per_step']:.1f}",
                          f"[{cpu_low:.1f}, {cpu_high:.1f}]", f"{stats['fit_wall_s']:.2f}", style=style)
        console.print(table)
        comparisons = Table(title="ratios per step, paired by round: median and 95% CI")
        for column in ("strategy", "ratio", "wall", "95% CI", "CPU", "95% CI "):
            comparisons.add_column(column, justify="right" if column not in ("strategy", "ratio") else "left")
        for strategy, ratios in config["ratios"].items():
            for name, stats in ratios.items():
                cells = [f"{stats['median']:.3f}", "[{:.3f}, {:.3f}]".format(*stats["ci95"])]
                cells += [f"{stats['cpu_median']:.3f}", "[{:.3f}, {:.3f}]".format(*stats["cpu_ci95"])]
                comparisons.add_row(strategy, name, *cells, style="green" if name.startswith("flashdist") else None)
        console.print(comparisons)
    console.print(f"[dim]method: {result['method']}[/dim]")
    console.print(f"[dim]environment: {json.dumps(result['environment'])}[/dim]")


HARNESS_COLOURS = {"flashdist": "#2a9d8f", "lightning": "#792ee5", "hf": "#e9c46a", "torch": "#264653",
                   "deepspeed": "#e76f51", "fsdp2": "#457b9d"}


def _harness_colour(harness: str) -> str:
    # lightning_ds, lightning_fsdp2_nolog, ...: plain Lightning's colour
    return HARNESS_COLOURS.get(harness) or HARNESS_COLOURS.get(harness.split("_")[0], "#999999")


def plot_fit(result: dict[str, Any], path: str | Path, clock: str = "cpu") -> Path:
    """Bars of ms/step per variant (with 95% CI), one panel per workload and process count.

    ``clock="cpu"`` (default) plots the process-CPU clock, which a loaded machine stretches least;
    ``"wall"`` the wall clock.
    """
    key, ci_key = ("cpu_us_per_step", "cpu_ci95") if clock == "cpu" else ("us_per_step", "ci95")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = result["configs"]
    fig, axes = plt.subplots(1, len(configs), figsize=(5.0 * len(configs), 4.2), squeeze=False)
    for ax, config in zip(axes[0], configs):
        names = list(config["variants"])
        values = [config["variants"][n][key] / 1e3 for n in names]
        cis = [[c / 1e3 for c in config["variants"][n][ci_key]] for n in names]
        errors = [[v - low for v, (low, _) in zip(values, cis)], [high - v for v, (_, high) in zip(values, cis)]]
        colours = [_harness_colour(n.split("/")[1]) for n in names]
        ax.bar(range(len(names)), values, yerr=errors, color=colours, capsize=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(f"ms per training step ({clock} clock)")
        ax.set_title(f"{config['workload']}, {config['devices']} process(es)")
    fig.suptitle(f"flashdist bench fit: {clock}-clock time per step (median of fits, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
