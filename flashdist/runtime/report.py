"""What a person sees around a fit: the plan before training, a table and the LR plot after.

Rank 0 only, and nothing per step: the plan prints once at ``on_train_start`` (after the
ledger started, before the progress bar opens), the table and ``lr.png`` once at
``on_fit_end`` from the summary the ledger handed the fit's :class:`FitRun`, after closing the
progress bar.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from flashdist.data.sampler import describe_order
from flashdist.runtime.ledger import LR_FILE, SUMMARY_FILE
from flashdist.runtime.fit_run import FitRun
from flashdist.runtime.planning import data_parallel_size
from flashdist.strategies.base import unwrap_optimizer

LR_PLOT_FILE = "lr.png"
# Beyond this many points a line plot only costs time; every n-th step still shows the shape.
_MAX_PLOTTED_STEPS = 5_000


class RunReport(Callback):
    """Prints the step plan before training and a summary table (with ``lr.png``) after it.

    Added to every fit by ``flashdist.Trainer`` (runtime/callbacks.py), built with the fit's run.
    """

    def __init__(self, run: FitRun, plot: bool = True):
        self.run = run
        self.plot = plot
        self._fit_started_at: float | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._fit_started_at = time.perf_counter()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            _print_rows("flashdist plan", plan_rows(self.run, pl_module))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        # Lightning closes its progress bar only at teardown, after this hook: a table printed
        # before that has the bar's last frame drawn under it (a file) or over it (a terminal).
        bar = trainer.progress_bar_callback
        if bar is not None:
            bar.teardown(trainer, pl_module, "fit")  # closing twice is a no-op for Lightning's bars
        root = Path(trainer.default_root_dir)
        summary = self.run.summary
        lr_rows = self.run.lr_log.read_rows() if summary is not None and self.run.lr_log is not None else []
        plot_path = draw_lr_curve(lr_rows, root / LR_PLOT_FILE, summary) if self.plot and lr_rows else None
        wall_s = time.perf_counter() - self._fit_started_at if self._fit_started_at is not None else None
        _print_rows("flashdist run", end_rows(trainer, summary, root, plot_path, wall_s, lr_rows))


# ---- the rows --------------------------------------------------------------------------------
def plan_rows(run: FitRun, pl_module: Any) -> list[tuple[str, str]]:
    """(label, value) rows describing the plan the fit is about to execute."""
    trainer, plan, schedule = run.trainer, run.plan, run.schedule
    per_epoch = plan.optimizer_steps_per_epoch
    if per_epoch and len(set(per_epoch)) == 1:
        per_epoch_text = f"{per_epoch[0]} × {len(per_epoch)} epoch(s)"
    else:
        per_epoch_text = ", ".join(str(s) for s in per_epoch) or "unknown (iterable without a length)"
    rows = [
        ("strategy", run.strategy_name),
        ("world size", f"{trainer.world_size} ({trainer.num_nodes} node(s) × {trainer.num_devices} device(s))"),
        ("data-parallel size", str(data_parallel_size(trainer))),
        ("data order", describe_order(trainer.train_dataloader)),
        ("micro-batches / epoch / rank", _or_unknown(plan.micro_batches_per_epoch_per_rank)),
        ("gradient accumulation", str(plan.accumulate_grad_batches)),
        ("global batch size", _or_unknown(plan.global_batch_size)),
        ("optimizer steps / epoch", per_epoch_text),
        ("total optimizer steps", str(plan.planned_total_steps)),
        ("warmup steps", _or_unknown(schedule.warmup_steps if schedule else None)),
        *_token_rows(plan),
        *_data_rows(trainer),
        ("parameters", parameter_text(pl_module)),
        ("optimizer", _optimizer_text(run, pl_module)),
        ("lr scheduler", f"{schedule.kwargs_repr}, every {schedule.frequency} {schedule.interval}(s)" if schedule else "none"),
        *_group_rows(trainer),
    ]
    return rows


def _token_rows(plan: Any) -> list[tuple[str, str]]:
    """Packed language-model data: the plan in tokens too."""
    if plan.tokens_per_step is None:
        return []
    budget = f" (max_tokens {plan.max_tokens:,}, rounded up to whole steps)" if plan.max_tokens else ""
    return [("tokens / optimizer step", f"{plan.tokens_per_step:,} = {plan.global_batch_size} × {plan.tokens_per_sample}"),
            ("total tokens", f"{plan.planned_total_tokens:,}{budget}")]


def parameter_text(module: Any) -> str:
    """Trainable / total parameters of the whole model, on every strategy.

    A ZeRO-3 parameter holds an empty local partition and its size in ``ds_numel``; an FSDP2
    parameter is a DTensor, whose ``numel()`` is already the global size.

    Example:
        >>> import torch
        >>> parameter_text(torch.nn.Linear(3, 2))
        '8 trainable / 8 total (100.00%)'
    """
    trainable = total = 0
    for parameter in module.parameters():
        count = int(getattr(parameter, "ds_numel", 0) or parameter.numel())
        total += count
        trainable += count if parameter.requires_grad else 0
    share = f" ({trainable / total:.2%})" if total else ""
    return f"{trainable:,} trainable / {total:,} total{share}"


def _data_rows(trainer: Any) -> list[tuple[str, str]]:
    """What the data module says it holds (LanguageModelingDataModule: documents, learned tokens, dropped)."""
    describe = getattr(getattr(trainer, "datamodule", None), "describe", None)
    rows = describe() if callable(describe) else None
    return list(rows or [])


def _group_rows(trainer: Any) -> list[tuple[str, str]]:
    """One row per named param group (param_groups= / layer_decay=): parameters, LR scale, weight decay."""
    groups = unwrap_optimizer(trainer.optimizers[0]).param_groups if trainer.optimizers else []
    if not any("name" in group for group in groups):
        return []
    return [
        (f"param group {index}", f"{group.get('name')}: {group.get('num_params', '?')} parameters, lr × {group.get('lr_scale', 1.0):g}, "
                                 f"weight_decay {group.get('weight_decay', 'default')}")
        for index, group in enumerate(groups)
    ]


def end_rows(trainer: Any, summary: dict[str, Any] | None, root: Path, plot_path: Path | None, wall_s: float | None,
             lr_rows: list[list[float]] | None = None) -> list[tuple[str, str]]:
    """(label, value) rows for the end-of-fit table: metrics, steps, time, and where the files are.

    ``lr_rows`` (lr.csv's LR columns, one row per optimizer step) give the LRs the steps used:
    the final one is the last step's, not the schedule's value after its last step.
    """
    rows = [(name, _number(value)) for name, value in sorted(_final_metrics(trainer).items())]
    if summary is not None:
        rows.append(("optimizer steps", f"{summary['optimizer_steps']} taken / {summary['planned_total_steps']} planned"))
        if summary.get("scheduler_steps_expected") is not None:
            rows.append(("scheduler steps", f"{summary['scheduler_steps']} taken / {summary['scheduler_steps_expected']} expected"))
        rows.append(("lr first / peak / final", " / ".join(_number(v) for v in lrs_used(summary, lr_rows))))
        if summary.get("tokens_seen") is not None:
            rate = summary.get("tokens_per_second")
            mfu = summary.get("mfu")
            rows.append(("tokens seen", f"{summary['tokens_seen']:,}" + (f" ({rate:,.0f} tokens/s" + (f", MFU {mfu:.1%})" if mfu is not None else ")") if rate else "")))
        if summary.get("elapsed_s") is not None:
            rows.append(("training time", f"{summary['elapsed_s']:.1f} s"))
    if wall_s is not None:
        rows.append(("fit time (with setup)", f"{wall_s:.1f} s"))
    for name in (SUMMARY_FILE, LR_FILE):
        if (root / name).exists():
            rows.append((name, str(root / name)))
    if plot_path is not None:
        rows.append((LR_PLOT_FILE, str(plot_path)))
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir:
            rows.append((f"{type(logger).__name__} logs", str(log_dir)))
    checkpoint = getattr(trainer, "checkpoint_callback", None)
    if checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
        rows.append(("checkpoint", str(checkpoint.best_model_path)))
    return rows


def lrs_used(summary: dict[str, Any], lr_rows: list[list[float]] | None) -> tuple[float | None, float | None, float | None]:
    """The first, peak and final LR the optimizer steps used (param group 0), from lr.csv's rows when there are any.

    Example:
        >>> lrs_used({}, [[0.0], [0.003], [7.4e-07]])
        (0.0, 0.003, 7.4e-07)
    """
    if lr_rows:
        used = [row[0] for row in lr_rows if row]
        return used[0], max(used), used[-1]
    lr = summary.get("lr") or {}
    return lr.get("first"), lr.get("peak"), lr.get("final")


def _optimizer_text(run: FitRun, pl_module: Any) -> str:
    choice = run.route.choice
    spec = getattr(pl_module, "optimizer_spec", None)
    requested = spec.describe() if spec is not None else None
    lr = getattr(pl_module, "learning_rate", None)
    lr_text = f", lr={lr:g}" if isinstance(lr, (int, float)) else ""
    if choice is None:
        return (requested or "?") + lr_text
    resolved = f"{choice.resolved_class}{lr_text}"
    return f"{resolved} (from {requested}; {choice.reason})" if requested else resolved


def _final_metrics(trainer: Any) -> dict[str, float]:
    metrics = {}
    for name, value in trainer.callback_metrics.items():
        try:
            metrics[name] = float(value)
        except (TypeError, ValueError):  # non-scalar metrics are for loggers, not the table
            continue
    return metrics


def _or_unknown(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (value == 0 or math.isfinite(value) and 1e-3 <= abs(value) < 1e4):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_rows(title: str, rows: list[tuple[str, str]]) -> str:
    """``title`` over two aligned columns, no line with trailing spaces (logs and terminals alike).

    Example:
        >>> print(format_rows("flashdist run", [("optimizer steps", "4 taken / 4 planned"), ("lr.csv", "runs/x/lr.csv")]))
        flashdist run
        optimizer steps  4 taken / 4 planned
        lr.csv           runs/x/lr.csv
    """
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join([title, *(f"{label:<{width}}  {value}".rstrip() for label, value in rows)])


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    print(format_rows(title, rows), flush=True)


# ---- the plot --------------------------------------------------------------------------------
def draw_lr_curve(lr_rows: list[list[float]], path: Path, summary: dict[str, Any] | None = None, title: str | None = None) -> Path:
    """Draw the LR each optimizer step really used (the ledger's rows) to ``path`` (PNG).

    Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend switch.

    Example:
        >>> draw_lr_curve([[0.1], [0.05]], Path("/tmp/lr.png"))  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stride = max(1, math.ceil(len(lr_rows) / _MAX_PLOTTED_STEPS))
    steps = list(range(1, len(lr_rows) + 1, stride))
    figure = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    groups = max(len(row) for row in lr_rows)
    # Decay / no-decay groups usually share one LR: draw it once rather than lines on top of each other.
    distinct = groups if any(len(set(row)) > 1 for row in lr_rows) else 1
    for group in range(distinct):
        values = [lr_rows[s - 1][group] if group < len(lr_rows[s - 1]) else math.nan for s in steps]
        label = f"param group {group}" if distinct > 1 else ("lr" if groups == 1 else f"lr (all {groups} param groups)")
        axes.plot(steps, values, label=label, linewidth=1.5)
    summary = summary or {}
    warmup = summary.get("planned_warmup_steps")
    if warmup:
        axes.axvline(warmup, color="grey", linestyle="--", linewidth=1, label=f"warmup end ({warmup})")
    planned = summary.get("planned_total_steps")
    scheduler = summary.get("lr_scheduler_spec") or summary.get("lr_scheduler") or "no scheduler"
    title = title or f"LR per optimizer step: {len(lr_rows)} taken of {planned if planned is not None else '?'} planned"
    axes.set_title(f"{title}\n{scheduler}",
                   fontsize=9)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    # Short tick labels (0.5 with ×1e-3 above, not 0.0005): a fixed left margin then holds the label.
    axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes.set_xlim(0, max(len(lr_rows), planned or 0) + 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    # Fixed margins rather than tight_layout(), which draws the figure once more just to measure it.
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.86)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
