"""``flashdist plan``: the step plan of a hypothetical cluster, without launching anything.

Same arithmetic as a real fit (:func:`flashdist.plan.plan_steps`); imports neither torch nor
Lightning unless ``--plot`` asks for an LR curve or ``--resume-from`` for a resume's dry run
(flashdist/cli/resume_plan.py), so it answers in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flashdist.errors import ConfigError
from flashdist.plan import StepPlan, plan_steps
from flashdist.spec_text import FORMS, read_spec_text
from flashdist.strategy_names import FLASHDIST_NAMES

HELP = "print the step plan for a hypothetical cluster, without launching anything"
# The warmup kwargs of the registered warmup schedules (transformers', flashdist's; DeepSpeed's WarmupLR/WarmupDecayLR).
WARMUP_KWARGS = ("num_warmup_steps", "warmup_num_steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashdist plan",
        description="Print the optimizer steps a fit with these settings takes, with the same semantics as a real fit: "
        "Lightning's DistributedSampler padding, an optimizer step every accumulate-grad-batches micro-batches and at "
        "each epoch end, on every strategy.",
    )
    parser.add_argument("--config", help="a flashdist fit YAML; its trainer/data/model values are the defaults here")
    parser.add_argument("--dataset-size", type=int, help="training samples")
    parser.add_argument("--batch-size", type=int, help="samples per micro-batch per rank")
    parser.add_argument("--num-nodes", type=int, default=None)
    parser.add_argument("--devices", type=int, default=None, help="processes (GPUs) per node")
    parser.add_argument("--model-parallel-size", type=int, default=1, help="ranks that share one data shard (tensor/pipeline)")
    parser.add_argument("--accumulate-grad-batches", type=int, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--limit-train-batches", type=_number, default=None,
                        help="int: a cap on batches (1 is one batch); float: a fraction (1.0 is all)")
    parser.add_argument("--fast-dev-run", type=_fast_dev_run, nargs="?", const=1, default=None, metavar="N",
                        help="Lightning's smoke run: N batches (no value: 1) in one epoch, whatever the epochs, steps and limits say")
    parser.add_argument("--drop-last", action="store_true", default=None)
    parser.add_argument("--warmup", default=None, help="0.05 (fraction), 500 (steps), '500ba', '2ep', '0.1dur', '2e6tok'")
    parser.add_argument("--seq-length", type=int, default=None,
                        help="packed language-model data: tokens per sample (then --dataset-size counts packed sequences, "
                        "and drop_last is on, as LanguageModelingDataModule's train loader has it)")
    parser.add_argument("--max-tokens", type=_count, default=None, help="a step budget in tokens (needs --seq-length), e.g. 2e9")
    parser.add_argument("--strategy", default=None, choices=FLASHDIST_NAMES)
    parser.add_argument("--lr-scheduler", default=None, help=f"for --plot: {FORMS}; its own warmup kwarg is the plan's warmup")
    parser.add_argument("--learning-rate", type=float, default=None, help="for --plot: the peak LR")
    parser.add_argument("--json", action="store_true", help="print one JSON object (summary.json's field names)")
    parser.add_argument("--plot", metavar="PNG", help="draw the LR curve (needs --lr-scheduler)")
    parser.add_argument(
        "--resume-from", metavar="CKPT", help="dry run of resuming this checkpoint on the given settings: verification, "
        "the saved identity, the new plan and each resume_policy's decision (devices, batch size, accumulation default to the saved)",
    )
    return parser


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.resume_from:
        return _run_resume(args)
    try:
        settings = _settings(args)
        report = plan_report(**settings)
        if args.plot:
            _plot(args.plot, report, settings)
    except ConfigError as error:
        print(f"flashdist plan: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return 0


def _run_resume(args: argparse.Namespace) -> int:
    from flashdist.cli.resume_plan import resume_report, resume_text

    try:
        settings = _settings(args, required=())
        report = resume_report(args.resume_from, settings, plan_report)
    except ConfigError as error:
        print(f"flashdist plan: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str) if args.json else resume_text(report, _text))
    return 0 if report["verified"] else 1


def plan_report(
    *,
    dataset_size: int,
    batch_size: int,
    num_nodes: int = 1,
    devices: int = 1,
    model_parallel_size: int = 1,
    accumulate_grad_batches: int = 1,
    max_epochs: int | None = None,
    max_steps: int = -1,
    limit_train_batches: int | float | None = None,
    fast_dev_run: int | bool = 0,
    drop_last: bool = False,
    warmup: Any = None,
    strategy: str = "ddp",
    lr_scheduler: Any = None,
    learning_rate: float | None = None,
    seq_length: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The plan as summary.json's fields.

    Example:
        >>> plan_report(dataset_size=1000, batch_size=9, devices=2, accumulate_grad_batches=3, max_epochs=3)["planned_total_steps"]
        57
    """
    world_size = num_nodes * devices
    if world_size % model_parallel_size:
        raise ConfigError(f"world size {world_size} is not divisible by model_parallel_size={model_parallel_size}.")
    plan = plan_steps(
        dataset_size=dataset_size,
        batch_size=batch_size,
        drop_last=drop_last,
        data_parallel_size=world_size // model_parallel_size,
        accumulate_grad_batches=accumulate_grad_batches,
        max_epochs=max_epochs,
        max_steps=max_steps,
        limit_train_batches=limit_train_batches,
        fast_dev_run=fast_dev_run,
        tokens_per_sample=seq_length,
        max_tokens=max_tokens,
    )
    warmup_steps = _warmup_steps(plan, warmup)
    return {
        "strategy": strategy,
        "world_size": world_size,
        "data_parallel_size": plan.data_parallel_size,
        "num_nodes": num_nodes,
        "devices": devices,
        "accumulate_grad_batches": accumulate_grad_batches,
        "max_epochs": plan.max_epochs,
        "max_steps": plan.max_steps,
        "limit_train_batches": limit_train_batches,
        "fast_dev_run": plan.fast_dev_run,
        "micro_batches_per_epoch_per_rank": plan.micro_batches_per_epoch_per_rank,
        "optimizer_steps_per_epoch": list(plan.optimizer_steps_per_epoch),
        "global_batch_size": plan.global_batch_size,
        "planned_total_steps": plan.planned_total_steps,
        "planned_warmup_steps": warmup_steps,
        "seq_length": seq_length,
        "max_tokens": max_tokens,
        "tokens_per_step": plan.tokens_per_step,
        "planned_total_tokens": plan.planned_total_tokens,
    }


def _warmup_steps(plan: StepPlan, warmup: Any) -> int | None:
    """The warmup in steps; not shorter than the run, it is refused, or under fast_dev_run cut to the run as a fit does."""
    if warmup is None:
        return None
    steps = plan.resolve_steps(_duration(warmup), what="--warmup")
    if steps < plan.planned_total_steps:
        return steps
    message = f"--warmup={warmup} is {steps} steps, not less than the {plan.planned_total_steps} planned"
    if not plan.fast_dev_run:
        raise ConfigError(f"{message}.")
    # A smoke run of a config written for the real run: the fit warns and cuts the warmup (optim/build.py).
    print(f"flashdist plan: {message}; fast_dev_run={plan.fast_dev_run}: a fit uses {plan.planned_total_steps} for this smoke run only.",
          file=sys.stderr)
    return plan.planned_total_steps


def _settings(args: argparse.Namespace, required: tuple[str, ...] = ("dataset_size", "batch_size")) -> dict[str, Any]:
    settings: dict[str, Any] = _from_config(args.config) if args.config else {}
    for key in (
        "dataset_size", "batch_size", "num_nodes", "devices", "model_parallel_size", "accumulate_grad_batches",
        "max_epochs", "max_steps", "limit_train_batches", "fast_dev_run", "drop_last", "warmup", "strategy", "lr_scheduler", "learning_rate",
        "seq_length", "max_tokens",
    ):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    for name in required:
        if settings.get(name) is None:
            raise ConfigError(f"--{name.replace('_', '-')} is required (or a --config whose data section gives it).")
    if settings.get("seq_length") is not None and settings.get("drop_last") is None:
        settings["drop_last"] = True  # LanguageModelingDataModule's train loader drops the partial batch
    if args.lr_scheduler is not None:  # the forms a config reads: a name, or [name, {kwargs}] in YAML flow or JSON
        settings["lr_scheduler"] = read_spec_text(args.lr_scheduler, "--lr-scheduler")
    own_warmup = _scheduler_warmup(settings.get("lr_scheduler"))
    if own_warmup is not None:
        key, value = own_warmup
        if args.warmup is not None:
            raise ConfigError(
                f"--warmup={args.warmup} and the scheduler's own {key}={value} both give the warmup.",
                hint=f"give it in one place: drop --warmup (the scheduler's {key}={value} is what a fit uses), or drop {key} from "
                "the scheduler's kwargs (--warmup then fills it).",
            )
        settings["warmup"] = value  # the warmup a fit of this scheduler takes: printed and drawn alike
    return settings


def _scheduler_warmup(spec: Any) -> tuple[str, Any] | None:
    """The scheduler's own warmup kwarg and its value, when its kwargs give one."""
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        for key in WARMUP_KWARGS:
            if key in spec[1]:
                return key, spec[1][key]
    return None


def _from_config(path: str) -> dict[str, Any]:
    """Plan inputs from a ``flashdist fit`` YAML: trainer.*, data.init_args.*, model.init_args.*."""
    from flashdist.cli.config_file import load_run_config

    config = load_run_config(path)  # a directory, a non-mapping or a duplicated key: a ConfigError
    trainer = config.get("trainer") or {}
    data = (config.get("data") or {}).get("init_args", config.get("data") or {})
    model = (config.get("model") or {}).get("init_args", {})
    out: dict[str, Any] = {}
    for key in ("num_nodes", "devices", "accumulate_grad_batches", "max_epochs", "max_steps", "limit_train_batches", "fast_dev_run",
                "strategy", "max_tokens"):
        if trainer.get(key) not in (None, "auto"):
            out[key] = trainer[key]
    if data.get("seq_length") is not None and data.get("packing", True) is not False and "train_files" in data:
        out["seq_length"] = data["seq_length"]  # a LanguageModelingDataModule that packs
    for key, names in (("dataset_size", ("dataset_size", "num_samples", "train_size")), ("batch_size", ("batch_size",)), ("drop_last", ("drop_last",))):
        for name in names:
            if data.get(name) is not None:
                out[key] = data[name]
    if model.get("lr_scheduler") is not None:
        scheduler = model["lr_scheduler"]  # its own warmup is read once the command line is merged (_settings)
        out["lr_scheduler"] = read_spec_text(scheduler, "model.init_args.lr_scheduler") if isinstance(scheduler, str) else scheduler
    if model.get("learning_rate") is not None:
        out["learning_rate"] = model["learning_rate"]
    return out


def _duration(value: Any) -> Any:
    """'0.05' → 0.05, '500' → 500, '2ep' stays a string (plan.parse_duration reads all three)."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _count(text: str) -> int:
    """An int written plainly or in scientific notation: 2e9 → 2000000000."""
    value = float(text)
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


def _fast_dev_run(text: str) -> int:
    """``--fast-dev-run`` alone is 1 batch (Lightning's True); ``--fast-dev-run 3`` is 3; true/false as in YAML."""
    words = {"true": 1, "false": 0}
    if text.lower() in words:
        return words[text.lower()]
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of batches (or true/false)")
    return int(text)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _text(report: dict[str, Any]) -> str:
    per_epoch = report["optimizer_steps_per_epoch"]
    shown = ", ".join(map(str, per_epoch[:6])) + (f", … ({len(per_epoch)} epochs)" if len(per_epoch) > 6 else "")
    rows = [
        ("strategy", report["strategy"]),
        ("world size", f"{report['world_size']} = {report['num_nodes']} node(s) × {report['devices']} device(s)"),
        ("data-parallel size", report["data_parallel_size"]),
        ("global batch size", f"{report['global_batch_size']} samples per optimizer step"),
        ("micro-batches / epoch / rank", report["micro_batches_per_epoch_per_rank"]),
        ("gradient accumulation", report["accumulate_grad_batches"]),
        *([("fast_dev_run", f"{report['fast_dev_run']} batch(es) in 1 epoch (epochs, steps and limits overridden)")]
          if report.get("fast_dev_run") else []),
        ("optimizer steps / epoch", shown),
        ("total optimizer steps", report["planned_total_steps"]),
        ("warmup steps", report["planned_warmup_steps"] if report["planned_warmup_steps"] is not None else "-"),
    ]
    if report.get("tokens_per_step") is not None:
        rows += [
            ("tokens / optimizer step", f"{report['tokens_per_step']:,} = {report['global_batch_size']} × {report['seq_length']} tokens"),
            ("total tokens", f"{report['planned_total_tokens']:,}"
             + (f" (max_tokens {report['max_tokens']:,}, rounded up to whole steps)" if report.get("max_tokens") else "")),
        ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


_PLAN_FIELDS = ("data_parallel_size", "accumulate_grad_batches", "max_epochs", "max_steps", "micro_batches_per_epoch_per_rank",
                "planned_total_steps", "global_batch_size")


def planned_lr_rows(report: dict[str, Any], settings: dict[str, Any]) -> tuple[str, list[list[float]]]:
    """The scheduler's name and the LR of each planned optimizer step, built as a fit builds it.

    The schedule's warmup is the plan's: the scheduler's own kwarg, or ``--warmup`` filling it
    (both at once is refused in :func:`_settings`), so the curve peaks where the printout says.
    """
    if settings.get("lr_scheduler") is None:
        raise ConfigError("--plot needs --lr-scheduler.", accepted=FORMS)
    import torch

    from flashdist.optim import LR_SCHEDULERS, build_lr_scheduler

    spec = settings["lr_scheduler"]
    parts = [spec] if isinstance(spec, str) else list(spec)
    name, kwargs, rest = parts[0], dict(parts[1] if len(parts) > 1 else {}), parts[2:]
    warmup_arg = next((a for a in LR_SCHEDULERS.get(name).duration_args if "warmup" in a), None)
    if warmup_arg and report["planned_warmup_steps"] is not None:
        kwargs.setdefault(warmup_arg, report["planned_warmup_steps"])  # --warmup feeds the schedule's warmup
    learning_rate = settings.get("learning_rate") or 1e-3
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=learning_rate)
    plan = StepPlan(**{name: report[name] for name in _PLAN_FIELDS}, optimizer_steps_per_epoch=tuple(report["optimizer_steps_per_epoch"]),
                    fast_dev_run=report["fast_dev_run"])
    scheduler, _ = build_lr_scheduler(optimizer, (name, kwargs, *rest), plan=plan)
    rows = []
    for _ in range(report["planned_total_steps"]):
        rows.append([float(group["lr"]) for group in optimizer.param_groups])
        scheduler.step()
    return name, rows


def _plot(path: str, report: dict[str, Any], settings: dict[str, Any]) -> None:
    from pathlib import Path

    name, rows = planned_lr_rows(report, settings)
    # The plotter a fit's lr.png uses (object API on an Agg canvas: no pyplot global state).
    from flashdist.runtime.report import draw_lr_curve

    summary = {**report, "lr_scheduler_spec": name}
    draw_lr_curve(rows, Path(path), summary, title=f"planned LR: {report['planned_total_steps']} optimizer steps")
