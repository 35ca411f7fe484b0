"""``flashdist bench schedulers | fit``: measure what LR scheduling (and flashdist) cost per step.

    flashdist bench schedulers [--groups 1,4,64] [--steps N] [--repeats R] [--json out.json] [--plot out.png]
    flashdist bench schedulers --scheduler 'mymodule:my_schedule' --scheduler '[steplr, {step_size: 10}]'
    flashdist bench compile [--workloads mlp,gpt2] [--backend inductor] [--json out.json]
    flashdist bench fit [--workloads mlp,gpt2] [--devices 1,2] [--strategies ddp,deepspeed,fsdp] [--repeats R] [--json out.json]
    flashdist bench llm [--variants ddp,fsdp+lora,...] [--rounds R] [--json out.json]   (--hf: against the HF Trainer)
    flashdist bench startup [--workloads quickstart,llm,lora] [--rounds R] [--before CHECKOUT] [--json out.json]

Each prints a table with ratios against a baseline measured in the same run, and the method.
Charts go to ``--out`` (default ``./bench-results/``), never into the package: a ``./flashdist/``
folder in the working directory would shadow the installed package for ``import flashdist``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

HELP = "measure per-step overhead: bench schedulers | compile | fit | syncs | ckpt | llm; and start-up: bench startup"

DEFAULT_OUT = "bench-results"  # under the working directory
WORKLOADS = ("mlp", "gpt2")  # flashdist.bench.workloads.WORKLOADS, without importing torch to parse arguments
# flashdist.bench.llm_worker.VARIANTS' names, without importing torch to parse arguments (a test keeps them equal)
LLM_VARIANTS = ("ddp", "ddp+lora", "deepspeed_stage_2", "deepspeed_stage_2+lora", "deepspeed_stage_3", "deepspeed_stage_3+lora",
                "fsdp", "fsdp/keep-gathered", "fsdp+lora", "fsdp+lora/keep-gathered")
STARTUP_WORKLOADS = ("quickstart", "quickstart-launch", "llm", "lora")  # flashdist.bench.startup.WORKLOADS (a test keeps them equal)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints (e.g. 1,4,64)") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive ints, e.g. 1,4,64")
    return values


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        values = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [v for v in values if v not in allowed]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of {', '.join(allowed)}")
        return values

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="flashdist bench", description=HELP)
    commands = root.add_subparsers(dest="what", required=True)

    sched = commands.add_parser("schedulers", help="cost of one scheduler.step(), every registered scheduler")
    sched.add_argument("--groups", type=_int_list, default=[1, 4, 64], help="param-group counts (default 1,4,64)")
    sched.add_argument("--steps", type=_positive, default=2000, help="step() calls per timed block (default 2000)")
    sched.add_argument("--repeats", type=_positive, default=15, help="interleaved rounds (default 15)")
    sched.add_argument("--warmup-steps", type=int, default=500, help="untimed steps per scheduler first (default 500)")
    sched.add_argument("--only", type=lambda t: [n.strip() for n in t.split(",") if n.strip()], default=None,
                       help="comma-separated registry names to time (default: all)")
    sched.add_argument("--scheduler", dest="specs", action="append", default=None, metavar="SPEC",
                       help="time this spec instead of the registry (repeatable): a name or recipe, "
                       "'[name, {kwargs}]' as YAML/JSON, or module:callable taking the optimizer")
    sched.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                       help="import MODULE first (repeatable), e.g. one that registers recipes on a Task class")
    sched.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                       help="wall: perf_counter; cpu: this thread's CPU time, for a machine others are loading")
    sched.add_argument("--device", default="cpu",
                       help="cpu (default) or cuda: LRs as tensors on the GPU that a CUDA graph of the optimizer step "
                       "reads; one call = step() + the graph's replay")
    sched.add_argument("--lr-as-tensor", action="store_true",
                       help="on the CPU: the cuda mode without the capture (tensor LRs, step() + the eager optimizer step)")
    sched.add_argument("--json", dest="json_path", default=None, help="write the results here")
    sched.add_argument("--plot", default=None, help="bar chart PNG (default OUT/schedulers.png); 'none' for none")
    sched.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the default outputs (default ./{DEFAULT_OUT})")

    comp = commands.add_parser("compile", help="compiled optimizer step (tensor LR) against eager, and recompiles")
    comp.add_argument("--workloads", type=_names(WORKLOADS), default=["mlp", "gpt2"],
                      help="comma-separated: mlp, gpt2 (default both)")
    comp.add_argument("--steps", type=_positive, default=200, help="calls per timed block (default 200)")
    comp.add_argument("--repeats", type=_positive, default=15, help="interleaved rounds (default 15)")
    comp.add_argument("--warmup-steps", type=_positive, default=20, help="untimed calls first, the compile (default 20)")
    comp.add_argument("--float-steps", type=_positive, default=20, help="steps of the float-LR contrast (default 20)")
    comp.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    comp.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    comp.add_argument("--json", dest="json_path", default=None, help="write the results here")

    fit = commands.add_parser("fit", help="flashdist per step against hand-written loops, plain Lightning and the HF Trainer")
    fit.add_argument("--workloads", type=_names(WORKLOADS), default=["mlp", "gpt2"], help="mlp (~1 ms step), gpt2 (~20 ms) (default both)")
    fit.add_argument("--devices", type=_int_list, default=[1, 2], help="process counts (default 1,2)")
    fit.add_argument("--device", default="cpu", help="cpu (default) or cuda: the same harnesses, one GPU per process")
    fit.add_argument("--strategies", type=_names(("ddp", "deepspeed", "fsdp")), default=None, help="at 2+ processes: ddp,deepspeed,fsdp (default all)")
    fit.add_argument("--harnesses", type=_names(("lightning", "flashdist", "hf", "lightning_nolog", "lightning_ds", "lightning_ds_nolog",
                                                        "lightning_fsdp2", "lightning_fsdp2_nolog")), default=None,
                     help="keep only these next to each strategy's hand-written loop: lightning,flashdist,hf and, under "
                     "deepspeed, lightning_ds (Lightning's own DeepSpeedStrategy), under fsdp, lightning_fsdp2 (Lightning's "
                     "own ModelParallelStrategy) (default all); lightning_nolog / lightning_ds_nolog / lightning_fsdp2_nolog "
                     "(without self.log) only when named")
    fit.add_argument("--steps", type=_positive, default=None, help="timed steps per fit (default mlp 300, gpt2 60)")
    fit.add_argument("--warmup-steps", type=int, default=None, help="steps dropped per fit (default mlp 50, gpt2 10)")
    fit.add_argument("--repeats", type=_positive, default=10, help="interleaved rounds of all variants (default 10)")
    fit.add_argument("--warmup-rounds", type=int, default=1, help="untimed rounds first (default 1)")
    fit.add_argument("--json", dest="json_path", default=None, help="write the results here")
    fit.add_argument("--plot", default=None, help="bar chart PNG (default OUT/fit.png); 'none' for none")
    fit.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the default outputs (default ./{DEFAULT_OUT})")
    fit.add_argument("--table", dest="table_path", default=None, help="also write the printed tables here (.txt)")

    syncs = commands.add_parser("syncs", help="host syncs per step: flashdist against plain Lightning and the hand loop, with each sync's source")
    syncs.add_argument("--devices", type=_int_list, default=[1, 2], help="process counts, CPU (default 1,2)")
    syncs.add_argument("--strategies", type=_names(("ddp", "deepspeed_stage_2", "fsdp")), default=None,
                       help="ddp,deepspeed_stage_2,fsdp (default all)")
    syncs.add_argument("--steps", type=_positive, default=20, help="profiled steps per fit (default 20)")
    syncs.add_argument("--warmup-steps", type=_positive, default=5, help="steps before the profiler starts (default 5)")
    syncs.add_argument("--device", default="cpu", help="cpu (default) or cuda: the same fits on the GPU, also counted "
                       "with torch.cuda.set_sync_debug_mode('warn')")
    syncs.add_argument("--json", dest="json_path", default=None, help="write the results here")

    ckpt = commands.add_parser("ckpt", help="seconds a checkpoint blocks training: synchronous vs async_checkpoint=True (DDP, FSDP2)")
    from flashdist.bench.ckpt import add_arguments as ckpt_arguments

    ckpt_arguments(ckpt)

    llm = commands.add_parser("llm", help="a CausalLM fine-tune: tokens/s under every strategy on 2 CPU processes (or, with --hf, "
                              "flashdist against the HF Trainer in one process)")
    llm.add_argument("--hf", action="store_true", help="one process, flashdist ÷ HF Trainer per step, instead of the strategies")
    llm.add_argument("--variants", type=_names(LLM_VARIANTS), default=None,
                     help=f"strategies only: a comma-separated subset of {','.join(LLM_VARIANTS)} (default all; ddp, the baseline, always runs)")
    llm.add_argument("--rounds", type=_positive, default=None, help="paired rounds after one untimed round (default 4; --hf 8)")
    llm.add_argument("--steps", type=_positive, default=None, help="timed optimizer steps per fit (default 8; --hf 60)")
    llm.add_argument("--warmup-steps", type=int, default=None, help="steps dropped per fit (default 3; --hf 10)")
    llm.add_argument("--seq-length", type=_positive, default=128)
    llm.add_argument("--batch-size", type=_positive, default=None, help="per process (default 4; --hf 8)")
    llm.add_argument("--json", dest="json_path", default=None, help="write the results here")
    llm.add_argument("--table", dest="table_path", default=None, help="strategies only: also write the printed table here (.txt)")

    startup = commands.add_parser("startup", help="seconds from a command's start to rank 0's first optimizer step: the shipped "
                                  "configs under flashdist against plain Lightning (and flashdist from another checkout)")
    startup.add_argument("--workloads", type=lambda t: [n.strip() for n in t.split(",") if n.strip()],
                         default=["quickstart", "llm", "lora"],
                         help=f"comma-separated, of {', '.join(STARTUP_WORKLOADS)} (default quickstart,llm,lora)")
    startup.add_argument("--rounds", type=_positive, default=3, help="rounds; round 0 is a warm-up, not reported (default 3)")
    startup.add_argument("--first-round", type=int, default=0,
                         help="number of the first round: who goes first alternates by it, and only round 0 is a warm-up (default 0)")
    startup.add_argument("--before", default=None, metavar="CHECKOUT",
                         help="also time flashdist from this checkout, e.g. `git worktree add /tmp/before <commit>`")
    startup.add_argument("--checks", action="store_true",
                         help="instead: time in this process the pre-launch checks a later rank no longer repeats (needs a run's "
                         "data cache under --out)")
    startup.add_argument("--calls", action="store_true",
                         help="instead: count (not time) the modules imported and the Python calls each rank makes up to its "
                         "first optimizer step under cProfile, flashdist against --before if given (each side run twice, the "
                         "second counted)")
    startup.add_argument("--json", dest="json_path", default=None, help="write the results here")
    startup.add_argument("--out", default=DEFAULT_OUT,
                         help=f"the runs' logs and data caches go to OUT/startup, kept so a later invocation starts warm "
                         f"(default ./{DEFAULT_OUT})")
    return root


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from flashdist.errors import ConfigError

    try:  # a refusal (a spec, a device this machine lacks) comes before anything is timed
        return _run(args, argv)
    except ConfigError as error:
        print(f"flashdist bench {args.what}: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from rich.console import Console

    from flashdist.bench import report

    console = Console(width=None if sys.stdout.isatty() else 150)  # a log file gets the whole table
    progress = lambda message: console.print(f"[dim]{message}[/dim]")  # noqa: E731
    if args.what == "schedulers":
        from flashdist.bench import schedulers, user_specs
        from flashdist.errors import ConfigError

        # every spec is parsed here and built by run() before anything is timed
        user_specs.import_modules(args.imports)
        specs = [user_specs.parse_scheduler_arg(text) for text in args.specs or []]
        if specs and args.only:
            raise ConfigError("--only and --scheduler were both given.", hint="--scheduler NAME times a name too.")
        if args.only:
            schedulers.check_known(args.only)
        result = schedulers.run(
            specs=specs,
            groups=args.groups,
            steps=args.steps,
            repeats=args.repeats,
            warmup_steps=args.warmup_steps,
            include=args.only,
            clock=args.clock,
            progress=progress,
            device=args.device,
            lr_as_tensor=args.lr_as_tensor,
        )
        report.print_scheduler_table(result, console)
        if args.plot != "none" and result["results"]:
            console.print(f"plot: {report.plot_schedulers(result, _output(args, 'schedulers.png'))}")
    elif args.what == "compile":
        import torch

        from flashdist.bench import compiled

        torch.set_num_threads(1)
        result = compiled.run(workloads=args.workloads, steps=args.steps, repeats=args.repeats, warmup_steps=args.warmup_steps,
                              float_steps=args.float_steps, backend=args.backend, device=args.device,
                              progress=progress)
        compiled.print_table(result, console)
    elif args.what == "syncs":
        from flashdist.bench import syncs

        result = syncs.run(devices=args.devices, strategies=args.strategies, steps=args.steps, warmup_steps=args.warmup_steps,
                           progress=progress, device=args.device)
        syncs.print_table(result, console)
    elif args.what == "ckpt":
        from flashdist.bench import ckpt

        return ckpt.measure(args)
    elif args.what == "startup":
        from pathlib import Path

        from flashdist.bench import startup

        root = Path(args.out).resolve() / "startup"  # absolute: the runs' working directory is the checkout
        before = None if args.before is None else Path(args.before).resolve()
        startup.check_request(args.workloads, before)
        if args.checks:
            for workload in args.workloads:
                cpu_s = startup.time_checks(workload.removesuffix("-launch"), root)["checks_cpu_s"]
                console.print(f"{workload}: rank 1's pre-launch checks, {cpu_s:.2f} s CPU (load {os.getloadavg()[0]:.1f})")
            return 0
        if args.calls:
            from flashdist.bench import startup_calls

            result = {"calls": {}}
            for workload in args.workloads:
                progress(f"{workload}: counting, each side run twice")
                counts = startup.count_calls(workload, root, before)
                result["calls"][workload] = counts
                for line in startup_calls.report(workload, counts):
                    console.print(line, highlight=False, markup=False)
        else:
            result = startup.run(args.workloads, rounds=args.rounds, root=root, before=before, first_round=args.first_round,
                                 progress=lambda line: console.print(line, highlight=False, markup=False))
            startup.print_summary(result["summary"], console)
    elif args.what == "llm" and not args.hf:
        from flashdist.bench import llm_strategies

        result = llm_strategies.run(variants=args.variants, rounds=args.rounds or 4, steps=args.steps or 8,
                                    warmup_steps=3 if args.warmup_steps is None else args.warmup_steps, seq_length=args.seq_length,
                                    batch_size=args.batch_size or 4, progress=progress)
        llm_strategies.print_table(result, console)
        if args.table_path:
            with open(args.table_path, "w") as handle:
                llm_strategies.print_table(result, Console(file=handle, width=220))
            console.print(f"table: {args.table_path}")
    elif args.what == "llm":
        from flashdist.bench import llm

        result = llm.run(rounds=args.rounds or 8, steps=args.steps or 60, warmup_steps=10 if args.warmup_steps is None else args.warmup_steps,
                         seq_length=args.seq_length, batch_size=args.batch_size or 8, progress=progress)
        low, high = result["ratio_ci95"]
        console.print(f"flashdist {result['flashdist_ms']:.2f} ms/step, HF Trainer {result['hf_ms']:.2f} ms/step "
                      f"({result['settings']['tokens_per_step']} tokens/step); flashdist ÷ HF per step: "
                      f"{result['ratio_median']:.3f} [95% CI {low:.3f}, {high:.3f}] over {len(result['rounds'])} paired rounds")
        cpu_low, cpu_high = result["cpu_ratio_ci95"]
        console.print(f"CPU clock: flashdist {result['flashdist_cpu_ms']:.2f} ms/step, HF Trainer {result['hf_cpu_ms']:.2f} ms/step; "
                      f"flashdist ÷ HF {result['cpu_ratio_median']:.3f} [95% CI {cpu_low:.3f}, {cpu_high:.3f}]; "
                      f"load average (1 min) over the rounds {result['load_1min_range'][0]:.1f}-{result['load_1min_range'][1]:.1f}")
        console.print(f"method: {result['method']}")
    else:
        from flashdist.bench import fit

        result = fit.run(
            workloads=args.workloads,
            devices=args.devices,
            strategies=args.strategies,
            harnesses=args.harnesses,
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            repeats=args.repeats,
            warmup_rounds=args.warmup_rounds,
            progress=progress,
            device=args.device,
        )
        report.print_fit_table(result, console)
        if args.table_path:
            with open(args.table_path, "w") as handle:
                report.print_fit_table(result, Console(file=handle, width=150))
            console.print(f"table: {args.table_path}")
        if args.plot != "none":
            console.print(f"plot: {report.plot_fit(result, _output(args, 'fit.png'))}")
    if args.json_path:
        result["command"] = shlex.join(["flashdist", "bench", *argv])  # every figure with the command that produced it
        console.print(f"json: {report.write_json(result, args.json_path)}")
    return 0


def _output(args: argparse.Namespace, default_name: str) -> str:
    """``--plot`` as given, else ``--out``/``default_name``: relative to the working directory."""
    return args.plot if args.plot is not None else os.path.join(args.out, default_name)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
