"""``python -m flashdist.bench.startup``: time to first optimizer step, flashdist against plain Lightning.

Each workload is one of the shipped configs run as a user runs it (``flashdist fit --config
...``, 2 CPU processes started by Lightning's own launcher), against the plain-Lightning script
that trains the same model on the same data with the same strategy
(``flashdist/bench/startup_lightning.py``). ``lora`` is ``configs/llm_finetune.yaml`` with
``--model.init_args.lora='{r: 8, alpha: 16, target_modules: [q_proj, v_proj]}'``;
``quickstart-launch`` is the quickstart under ``flashdist launch --nproc-per-node 2``.

Method: a run is timed from just before its command is started to the moment global rank 0
finishes its first optimizer step (:class:`FirstStepStamp`, the same callback on both sides,
writes wall-clock stamps to the file named by ``FLASHDIST_STARTUP_STAMPS``); the run is then
stopped. Each rank also stamps when its process started (``/proc``) and when its fit began, so
the table shows when rank 1 started and how long rank 0 took to reach ``fit``. Rounds alternate
which side goes first; the load average is printed with every figure (the machine is shared:
figures from different moments are not comparable, pairs are). Each side keeps its own
``default_root_dir`` across rounds, so flashdist's tokenized-data cache is warm after the
first round (as for a user's second run); the first round is a warm-up and is not reported.

``--before CHECKOUT`` adds a third side, flashdist from another checkout (the same configs and
callback), in the same alternating rounds: before/after figures of a change are paired too.

Example:
    $ python -m flashdist.bench.startup --workloads quickstart,llm,lora --rounds 3 --before /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

STAMPS_ENV = "FLASHDIST_STARTUP_STAMPS"
WORKLOADS = ("quickstart", "quickstart-launch", "llm", "lora")
LORA = "--model.init_args.lora={r: 8, alpha: 16, target_modules: [q_proj, v_proj]}"
CONFIGS = {"quickstart": "configs/quickstart.yaml", "quickstart-launch": "configs/quickstart.yaml",
           "llm": "configs/llm_finetune.yaml", "lora": "configs/llm_finetune.yaml"}


class FirstStepStamp(Callback):
    """Write ``{"rank", "event", "t"}`` lines (wall clock) to ``$FLASHDIST_STARTUP_STAMPS``: process start, fit start, first step."""

    def __init__(self) -> None:
        self.path = os.environ.get(STAMPS_ENV)
        self.stepped = False
        # Built once the imports are done and the config is read (the CLI builds the Trainer's callbacks
        # then; the plain script in main()); the rank from the launcher's environment, as there is no Trainer yet.
        self._write(None, "built", time.time())

    def _write(self, trainer: Any, event: str, t: float) -> None:
        rank = trainer.global_rank if trainer is not None else int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
        if self.path:
            with open(self.path, "a") as out:
                out.write(json.dumps({"rank": rank, "event": event, "t": t}) + "\n")

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, "process_start", process_start_time())
        self._write(trainer, "fit_start", time.time())

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if not self.stepped and trainer.global_step >= 1:  # global_step counts optimizer steps
            self.stepped = True
            self._write(trainer, "first_step", time.time())


def process_start_time() -> float:
    """This process's start, wall clock (Linux: /proc/self/stat's start time in ticks after boot)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def flashdist_command(workload: str, root: Path, stamp_class: str = "flashdist.bench.startup.FirstStepStamp") -> list[str]:
    """``flashdist fit --config <workload's config>`` (under ``flashdist launch`` for quickstart-launch), logging under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    stamp_config = root / "stamp.yaml"  # a second --config: flashdist's checks read config files, not `callbacks+=`
    stamp_config.write_text(f"trainer:\n  callbacks:\n    - class_path: {stamp_class}\n")
    command = [sys.executable, "-m", "flashdist.cli.main", "fit", "--config", CONFIGS[workload], "--config", str(stamp_config),
               f"--trainer.default_root_dir={root}"]
    if workload == "lora":
        command.append(LORA)
    if workload == "quickstart-launch":
        command = [sys.executable, "-m", "flashdist.cli.main", "launch", "--nproc-per-node", "2", "--", *command]
    return command


def sides(workload: str, root: Path, before: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each side's command and environment: flashdist (this checkout), plain Lightning, and flashdist from ``before``.

    Each side logs under its own folder of ``root``, the same for every workload: llm and lora share the tokenized data.
    """
    here = str(Path(__file__).resolve().parents[2])
    runs = {
        "flashdist": (flashdist_command(workload, root / "flashdist"), {"PYTHONPATH": here}),
        "lightning": ([sys.executable, "-m", "flashdist.bench.startup_lightning", workload.removesuffix("-launch"),
                       "--root", str(root / "lightning")], {"PYTHONPATH": here}),
    }
    if before is not None:  # an older checkout has no stamp callback: this module, copied beside it under another name
        stamps = root / "stamp_module"
        stamps.mkdir(parents=True, exist_ok=True)
        (stamps / "fd_startup_stamp.py").write_text(Path(__file__).read_text())
        runs["before"] = (flashdist_command(workload, root / "before", "fd_startup_stamp.FirstStepStamp"),
                          {"PYTHONPATH": os.pathsep.join([str(before), str(stamps)])})
    return runs


def time_to_first_step(command: list[str], stamps: Path, env: dict[str, str], limit_s: float = 600.0) -> dict[str, Any]:
    """Run ``command`` until global rank 0's first optimizer step; its stamps relative to the start (seconds)."""
    stamps.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    started = time.time()
    proc = subprocess.Popen(command, env={**os.environ, **env, STAMPS_ENV: str(stamps)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    events: dict[tuple[int, str], float] = {}
    try:
        while (0, "first_step") not in events:
            if proc.poll() is not None:
                raise RuntimeError(f"{command} ended ({proc.returncode}) before a step:\n{proc.stderr.read()[-3000:]}")
            if time.time() - started > limit_s:
                raise RuntimeError(f"{command}: no step within {limit_s} s")
            time.sleep(0.2)  # a benchmark polling its own child, not a test
            if stamps.exists():
                for line in stamps.read_text().splitlines():
                    row = json.loads(line)
                    events[(row["rank"], row["event"])] = row["t"] - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {"load_1min": round(load, 1), "first_step_s": events[(0, "first_step")],
            "rank0_built_s": events.get((0, "built")), "rank1_built_s": events.get((1, "built")),
            "rank0_fit_start_s": events.get((0, "fit_start")), "rank1_process_start_s": events.get((1, "process_start")),
            "rank1_fit_start_s": events.get((1, "fit_start"))}


def time_checks(workload: str, root: Path) -> dict[str, float]:
    """The CPU seconds of the pre-launch checks a rank started after them no longer repeats, in this process.

    Builds ``workload``'s config as rank 1 of 2 does (``LOCAL_RANK=1``: no tokenizing, the cache of an
    earlier run read), then times ``FlashdistCLI``'s strategy check and ``check_fit_before_launch``
    (their first call, as a rank makes it). Needs a run of the workload under ``root`` first (its data cache).
    """
    from flashdist.cli.fit import build_cli
    from flashdist.runtime.trainer import check_fit_before_launch, check_strategy_before_launch

    os.environ.update({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"})
    argv = ["fit", "--config", CONFIGS[workload], f"--trainer.default_root_dir={root / 'flashdist'}", "--trainer.logger=false"]
    cli = build_cli(argv + ([LORA] if workload == "lora" else []), run=False)
    started = time.process_time()
    check_strategy_before_launch(cli.trainer, cli.model, cli.datamodule)
    check_fit_before_launch(cli.trainer, cli.model, cli.datamodule)
    return {"checks_cpu_s": time.process_time() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="quickstart,llm,lora", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the first is a warm-up, not reported (default 3)")
    parser.add_argument("--before", type=Path, default=None, help="also time flashdist from this checkout (e.g. before a change)")
    parser.add_argument("--json", dest="json_path", default=None, help="append each result here as a JSON line")
    parser.add_argument("--root", type=Path, default=None, help="keep the runs' folders here (caches warm across invocations)")
    parser.add_argument("--first-round", type=int, default=0, help="number of the first round (who goes first alternates by it)")
    parser.add_argument("--checks", action="store_true", help="only time, in this process, the checks a later rank no longer repeats")
    args = parser.parse_args(argv)
    if args.checks:
        for workload in args.workloads.split(","):
            print(f"{workload}: rank 1's pre-launch checks, {time_checks(workload.removesuffix('-launch'), args.root or Path('.'))['checks_cpu_s']:.2f} s CPU "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        return
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    root = args.root or Path(tempfile.mkdtemp(prefix="flashdist-startup-"))
    print("workload            side       round  load(1min)  first step (s)  rank0 fit start  rank1 start  rank1 fit start"
          "  rank0 built  rank1 built", flush=True)
    for round_index in range(args.first_round, args.first_round + args.rounds):
        for workload in workloads:
            runs = sides(workload, root, args.before)
            order = list(runs) if round_index % 2 == 0 else list(reversed(runs))  # alternate who goes first
            for side in order:
                command, env = runs[side]
                result = time_to_first_step(command, root / "stamps.jsonl", env)
                result |= {"workload": workload, "side": side, "round": round_index, "warmup": round_index == 0}
                fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
                print(f"{workload:<19} {side:<10} {round_index:>5}{' (w)' if round_index == 0 else '    '} {result['load_1min']:>6.1f}  "
                      f"{result['first_step_s']:>14.1f}  {fmt(result['rank0_fit_start_s']):>15}  "
                      f"{fmt(result['rank1_process_start_s']):>11}  {fmt(result['rank1_fit_start_s']):>15}  "
                      f"{fmt(result['rank0_built_s']):>11}  {fmt(result['rank1_built_s']):>11}", flush=True)
                if args.json_path:
                    with open(args.json_path, "a") as out:
                        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
