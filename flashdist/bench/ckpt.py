"""How long a checkpoint blocks training, synchronous against ``Trainer(async_checkpoint=True)``.

``flashdist bench ckpt`` (or ``python -m flashdist.bench.ckpt``): one ``torchrun`` of 2 CPU
processes (gloo; ``--device cuda --processes N``: N GPUs, nccl) runs, for each strategy (``ddp``, ``fsdp``), real flashdist fits of a model of
``--model-mb`` MB of float32 parameters (plain SGD, so a checkpoint is about the model's size),
alternating synchronous and asynchronous fits in rounds (paired: same process, same data,
the order flipped every round). Each fit takes ``--steps`` optimizer steps and saves with
``trainer.save_checkpoint`` every ``--save-every`` steps from a callback (the path
``ModelCheckpoint`` takes), into a fresh temporary directory.

The ranks enter each timed save together (an untimed barrier first, in both modes): on 2 cores
shared by 2 ranks and a background writer, the ranks drift apart by tens of milliseconds, and the
first collective inside a save (the path's broadcast) would absorb that drift, which training's
next collective absorbs when no save is due; it is not what the save costs.

Reported per strategy and mode (rank 0; both ranks are blocked either way): the median seconds
``save_checkpoint`` held the training thread plus, for FSDP2's asynchronous staging, the seconds
the next optimizer step then waited for the copy to finish (``blocked``; that wait is also
reported alone), the ratio async ÷ sync of those
medians, paired per round with a bootstrap CI, and the median step time with no save in flight
and, asynchronous, while one was in flight (the background writer shares the CPU with
training). The first step of each fit is dropped (warm-up). The load average is printed
beside the numbers: the machine this ran on may be shared.

Blocking and back-pressure apart: at most one save is in flight, so a save that comes due while
the previous one is still being written waits for it. That wait says the saves are closer
together than a write takes (back-pressure), not what a save blocks. With ``--spacing wait``
(the default) the bench waits for the previous save before each timed asynchronous save,
untimed, and reports that wait as back-pressure; beside it, the background write's seconds,
the time each save had before the next one came due, and how many saves came due before the
previous was written. ``--spacing none`` saves on schedule (any wait then falls inside the
timed call, and is reported as the longest wait inside a save).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STRATEGIES = ("ddp", "fsdp")


def _model(model_mb: int) -> Any:
    from torch import nn

    width = 2048  # a 2048² float32 layer is 16 MB
    layers = max(1, round(model_mb / 16))
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width, bias=False), nn.ReLU()) for _ in range(layers)], nn.Linear(width, 2))


def _fit(strategy: str, asynchronous: bool, config: dict, directory: Path) -> dict[str, list[float]]:
    import torch
    from lightning.pytorch import Callback
    from torch.utils.data import DataLoader, TensorDataset

    import flashdist
    from flashdist.bench.device import lightning_accelerator
    from flashdist.runtime.async_checkpoint import background_writer, wait_for_checkpoints
    from flashdist.tasks.classification import ClassificationTask

    class TimedSaves(Callback):
        def __init__(self) -> None:
            self.blocked_s: list[float] = []
            self.backpressure_s: list[float] = []  # the bench's wait for the previous save, before a timed one
            self.save_due: list[float] = []  # when a save was due (before the bench's wait)
            self.save_started: list[float] = []
            self.step_s: dict[str, list[float]] = {"idle": [], "in_flight": []}
            self.staging_wait_s: list[float] = []  # per save: the next optimizer step's wait for FSDP2's staging copy
            self._staging_waits_before = 0  # how many waits the writer had recorded at the last save
            self._last_end: float | None = None
            self._busy = False

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            now = time.perf_counter()
            if self._last_end is not None and trainer.global_step > 2:  # the first steps warm up
                self.step_s["in_flight" if self._busy else "idle"].append(now - self._last_end)
            writer = background_writer(trainer.strategy)
            if writer is not None and len(self.staging_wait_s) < len(self.blocked_s):
                # the step after a save: what it waited for the save's staging is blocking too
                waited = sum(writer.staging_waited_s[self._staging_waits_before:])
                self.staging_wait_s.append(waited)
                self.blocked_s[-1] += waited
            if trainer.global_step % config["save_every"] == 0:
                self.save_due.append(time.perf_counter())
                if writer is not None and config.get("spacing", "wait") == "wait":
                    # Space the saves: a save timed while the previous one is still being written would
                    # measure back-pressure (the save interval against the write), not what a save blocks.
                    started = time.perf_counter()
                    wait_for_checkpoints(trainer.strategy)
                    self.backpressure_s.append(time.perf_counter() - started)
                # The ranks enter the timed save together (untimed barrier, sync and async alike): a save's
                # first collective would otherwise also absorb their skew, which training's next
                # collective absorbs when there is no save.
                trainer.strategy.barrier("bench_ckpt_aligned")
                started = time.perf_counter()
                self.save_started.append(started)
                trainer.save_checkpoint(directory / f"step={trainer.global_step}.ckpt", weights_only=False)
                self.blocked_s.append(time.perf_counter() - started)
                self._staging_waits_before = len(writer.staging_waited_s) if writer is not None else 0
            self._busy = writer is not None and writer.busy
            self._last_end = time.perf_counter()

    timed = TimedSaves()
    steps, batch = config["steps"], 8
    x = torch.randn(steps * batch * 2, 2048, generator=torch.Generator().manual_seed(0))
    task = ClassificationTask(_model(config["model_mb"]), num_classes=2, optimizer="sgd", learning_rate=1e-4)
    trainer = flashdist.Trainer(
        accelerator=lightning_accelerator(config.get("device", "cpu")), devices=config.get("processes", 2), strategy=strategy, max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, callbacks=[timed], default_root_dir=directory,
        async_checkpoint=asynchronous,
    )
    trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=batch))
    writer = background_writer(trainer.strategy)  # after the fit: every save is complete
    # how long each save had to be written before the next one was due
    due_after = [due - started for started, due in zip(timed.save_started, timed.save_due[1:])]
    return {"blocked_s": timed.blocked_s, **{f"step_{k}_s": v for k, v in timed.step_s.items()},
            "backpressure_s": timed.backpressure_s, "staging_wait_s": timed.staging_wait_s, "waited_in_save_s": list(writer.waited_s) if writer else [],
            "written_s": list(writer.written_s) if writer else [],
            "in_strategy_save_s": list(writer.blocked_s) if writer else [], "save_interval_s": due_after}


def worker(config: dict) -> None:
    """One torchrun rank: every (strategy, mode) fit of every round; rank 0 writes the raw times."""
    import shutil

    import torch

    torch.set_num_threads(1)
    from flashdist.bench.fit_worker import quiet_flashdist_fits

    quiet_flashdist_fits()  # no per-fit plan, run table or dependency banner: the bench prints one line per fit
    rank = int(os.environ.get("RANK", "0"))
    raw: dict[str, Any] = {}
    for round_index in range(config["rounds"]):
        for strategy in config["strategies"]:
            modes = [False, True] if round_index % 2 == 0 else [True, False]
            for asynchronous in modes:
                name = f"{strategy}/{'async' if asynchronous else 'sync'}"
                directory = Path(config["directory"]) / f"{strategy}-{round_index}-{int(asynchronous)}"
                times = _fit(strategy, asynchronous, config, directory)
                raw.setdefault(name, []).append(times)
                if rank == 0:
                    shutil.rmtree(directory, ignore_errors=True)
                    print(f"bench ckpt: round {round_index} {name}: blocked {[round(t, 3) for t in times['blocked_s']]} s", file=sys.stderr, flush=True)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps(raw))


def summarize(raw: dict[str, list[dict[str, list[float]]]]) -> dict[str, Any]:
    """Medians per (strategy, mode), and async ÷ sync of the blocked seconds paired per round.

    A fit's first asynchronous save also allocates the snapshot's memory (DDP) or DCP's staging
    copies (FSDP2), and FSDP2's makes the checkpoint's process group; every later save reuses
    them. So the first save of each fit and the later ones are reported apart, and the ratio
    is taken for the later ones (a long run's saves).
    """
    from flashdist.bench.stats import bootstrap_ci, median

    flat = lambda runs, key, part=slice(None): [t for run in runs for t in run.get(key, [])[part]]  # noqa: E731
    optional = lambda values: median(values) if values else None  # noqa: E731
    out: dict[str, Any] = {}
    for strategy in sorted({name.split("/")[0] for name in raw}):
        sync, asynchronous = raw[f"{strategy}/sync"], raw[f"{strategy}/async"]
        later = slice(1, None)
        ratios = [median(a["blocked_s"][later]) / median(s["blocked_s"]) for s, a in zip(sync, asynchronous, strict=True)
                  if a["blocked_s"][later]]
        out[strategy] = {
            "sync_blocked_s": median(flat(sync, "blocked_s")),
            "async_first_blocked_s": median(flat(asynchronous, "blocked_s", slice(0, 1))),
            "async_later_blocked_s": optional(flat(asynchronous, "blocked_s", later)),
            "async_later_over_sync_blocked": optional(ratios),
            "async_later_over_sync_blocked_ci95": bootstrap_ci(ratios) if ratios else None,
            "sync_step_s": median(flat(sync, "step_idle_s")),
            "async_step_idle_s": optional(flat(asynchronous, "step_idle_s")),
            "async_step_in_flight_s": optional(flat(asynchronous, "step_in_flight_s")),
            "saves_per_mode": len(flat(sync, "blocked_s")),
            "steps_in_flight": len(flat(asynchronous, "step_in_flight_s")),
            # back-pressure, apart from blocking: a save due while the previous one is still written
            "async_write_s": optional(flat(asynchronous, "written_s")),
            "async_save_interval_s": optional(flat(asynchronous, "save_interval_s")),
            "async_backpressure_s": optional(flat(asynchronous, "backpressure_s", later)),
            "async_saves_due_before_previous_written": sum(
                w > i for run in asynchronous for w, i in zip(run.get("written_s", []), run.get("save_interval_s", []))),
            "async_waited_in_save_s_max": max(flat(asynchronous, "waited_in_save_s"), default=None),
            # of the later saves' blocked time, what flashdist's own save took (the rest: Lightning's
            # dump_checkpoint, which builds the state dicts, and its barrier after the save)
            "async_later_in_strategy_save_s": optional(flat(asynchronous, "in_strategy_save_s", later)),
            # of the later saves' blocked time, the next optimizer step's wait for FSDP2's staging copy
            "async_later_staging_wait_s": optional(flat(asynchronous, "staging_wait_s", later)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashdist bench ckpt", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return measure(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-mb", type=int, default=256, help="model size in MB of float32 parameters (default 256)")
    parser.add_argument("--steps", type=int, default=9, help="optimizer steps per fit (default 9)")
    parser.add_argument("--save-every", type=int, default=3, help="save every N steps (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="paired rounds, the order flipped each round (default 2)")
    parser.add_argument("--strategies", type=lambda t: [s for s in t.split(",") if s], default=list(STRATEGIES),
                        help="comma-separated: ddp,fsdp (default both)")
    parser.add_argument("--spacing", choices=("wait", "none"), default="wait",
                        help="wait (default): before a timed asynchronous save, wait (untimed, reported as back-pressure) "
                        "for the previous one to be written, so 'blocked' is what a save blocks; none: save on schedule, "
                        "a save due while one is in flight waits inside the timed call")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: the model on the GPU, one per process; "
                        "the snapshot is then a device-to-host copy into pinned memory")
    parser.add_argument("--processes", type=int, default=2, help="processes (ranks), one device each on cuda (default 2)")
    parser.add_argument("--directory", default=None, help="where the checkpoints are written (default: a temporary directory)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


def measure(args: argparse.Namespace) -> int:
    from flashdist.bench.stats import environment

    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        print(f"--strategies: {unknown} not known; accepted: {', '.join(STRATEGIES)}", file=sys.stderr)
        return 2
    from flashdist.bench.device import check_device, device_name

    device = check_device(args.device, processes=args.processes)  # before any process starts
    before = {**environment(), "device": device_name(device)}
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        out = Path(directory) / "raw.json"
        config = {"model_mb": args.model_mb, "steps": args.steps, "save_every": args.save_every, "rounds": args.rounds,
                  "spacing": args.spacing, "device": device, "processes": args.processes, "strategies": args.strategies, "directory": directory, "out": str(out)}
        torchrun = Path(sys.executable).with_name("torchrun")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [str(torchrun), "--nproc-per-node", str(args.processes), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   "-m", "flashdist.bench.ckpt", "--worker", json.dumps(config)]
        started = time.perf_counter()
        returncode = _run_quietly(command)
        if returncode != 0:
            return returncode
        raw = json.loads(out.read_text())
    options = ["--model-mb", args.model_mb, "--steps", args.steps, "--save-every", args.save_every, "--rounds", args.rounds,
               "--strategies", ",".join(args.strategies), "--spacing", args.spacing, "--device", device, "--processes", args.processes]
    result = {"command": " ".join(["flashdist", "bench", "ckpt", *map(str, options)]), "method": __doc__, "config": {k: v for k, v in config.items() if k not in ("directory", "out")},
              "environment_before": before, "load_average_after": environment()["load_average_1_5_15min"],
              "wall_s": round(time.perf_counter() - started, 1), "results": summarize(raw), "raw": raw}
    _print(result)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return 0


def _run_quietly(command: list[str]) -> int:
    """Run the workers, showing only the bench's own progress lines; everything, on a failure.

    Each of the bench's fits would print its plan, its run table and the dependencies' banners.
    """
    from collections import deque

    # OMP_NUM_THREADS given: torchrun prints a banner when it has to choose it (the worker uses one thread anyway)
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=300)
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            if line.startswith("bench ckpt:"):
                print(line, end="", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        print("".join(tail), end="", file=sys.stderr)
        print(f"bench ckpt: the workers failed (exit {proc.returncode}); their last lines are above", file=sys.stderr)
    return proc.returncode


def _print(result: dict[str, Any]) -> None:
    env = result["environment_before"]
    config = result["config"]
    print(f"bench ckpt: {config['model_mb']} MB model, {config['processes']} process(es) on {env['device']}, {config['rounds']} paired rounds, "
          f"wall {result['wall_s']} s; load average before {env['load_average_1_5_15min']}, after {result['load_average_after']} "
          f"({env['cpu_count']} CPUs), torch {env['torch']}, commit {env['git_commit']}")
    print(f"{'strategy':8} {'sync blocked':>13} {'async 1st':>10} {'async later':>12} {'later÷sync [95% CI]':>26} "
          f"{'step sync':>10} {'step async idle':>16} {'step async in flight':>21}")
    fmt = lambda v: "—" if v is None else f"{v:.3f} s"  # noqa: E731
    for strategy, r in result["results"].items():
        ratio = r["async_later_over_sync_blocked"]
        ci = r["async_later_over_sync_blocked_ci95"] or (float("nan"), float("nan"))
        ratio_text = "—" if ratio is None else f"{ratio:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        print(f"{strategy:8} {fmt(r['sync_blocked_s']):>13} {fmt(r['async_first_blocked_s']):>10} {fmt(r['async_later_blocked_s']):>12} "
              f"{ratio_text:>26} {fmt(r['sync_step_s']):>10} {fmt(r['async_step_idle_s']):>16} {fmt(r['async_step_in_flight_s']):>21}")
    print(f"{'strategy':8} {'async write':>12} {'next save due after':>20} {'saves due before written':>25} "
          f"{'back-pressure (bench wait)':>27} {'longest wait inside a save':>27} {'async later, in flashdist save':>31} "
          f"{'async later, next step waits for staging':>41}")
    for strategy, r in result["results"].items():
        print(f"{strategy:8} {fmt(r['async_write_s']):>12} {fmt(r['async_save_interval_s']):>20} "
              f"{r['async_saves_due_before_previous_written']:>25} {fmt(r['async_backpressure_s']):>27} "
              f"{fmt(r['async_waited_in_save_s_max']):>27} {fmt(r['async_later_in_strategy_save_s']):>31} "
              f"{fmt(r.get('async_later_staging_wait_s')):>41}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
