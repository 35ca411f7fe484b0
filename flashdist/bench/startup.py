"""``flashdist bench startup``: time to the first optimizer step, flashdist against plain Lightning.

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
    $ flashdist bench startup --workloads quickstart,llm,lora --rounds 3 --before /path/to/old/checkout
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
           "llm": "configs/llm_finetune.yaml", "lora": "configs/llm_finetune.yaml"}  # relative to CHECKOUT
CHECKOUT = Path(__file__).resolve().parents[2]  # the runs' working directory: the configs name their data relative to it


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


def flashdist_command(workload: str, root: Path, stamp_class: str = "flashdist.bench.startup.FirstStepStamp",
                      entry: str = "flashdist.cli.main") -> list[str]:
    """``flashdist fit --config <workload's config>`` (under ``flashdist launch`` for quickstart-launch), logging under ``root``.

    ``entry``: the module run as ``python -m`` for the fit (``flashdist.bench.startup_calls`` profiles it).
    """
    root.mkdir(parents=True, exist_ok=True)
    stamp_config = root / f"{stamp_class.rsplit('.', 1)[1]}.yaml"  # a second --config: flashdist's checks read config files
    stamp_config.write_text(f"trainer:\n  callbacks:\n    - class_path: {stamp_class}\n")
    command = [sys.executable, "-m", entry, "fit", "--config", CONFIGS[workload], "--config", str(stamp_config),
               f"--trainer.default_root_dir={root}"]
    if workload == "lora":
        command.append(LORA)
    if workload == "quickstart-launch":
        command = [sys.executable, "-m", "flashdist.cli.main", "launch", "--nproc-per-node", "2", "--", *command]
    return command


def sides(workload: str, root: Path, before: Path | None) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """Each side's command, environment and working directory: flashdist (this checkout), plain Lightning, flashdist from ``before``.

    Each side logs under its own folder of ``root``, the same for every workload: llm and lora share the tokenized data.
    Each flashdist side runs in its own checkout: ``python -m`` puts the working directory first on ``sys.path``, so
    ``before`` run from this checkout would import this checkout's flashdist, whatever ``PYTHONPATH`` says.
    """
    here = str(CHECKOUT)
    runs = {
        "flashdist": (flashdist_command(workload, root / "flashdist"), {"PYTHONPATH": here}, CHECKOUT),
        "lightning": ([sys.executable, "-m", "flashdist.bench.startup_lightning", workload.removesuffix("-launch"),
                       "--root", str(root / "lightning")], {"PYTHONPATH": here}, CHECKOUT),
    }
    if before is not None:  # an older checkout has no stamp callback: this module, copied beside it under another name
        stamps = root / "stamp_module"
        stamps.mkdir(parents=True, exist_ok=True)
        (stamps / "fd_startup_stamp.py").write_text(Path(__file__).read_text())
        runs["before"] = (flashdist_command(workload, root / "before", "fd_startup_stamp.FirstStepStamp"),
                          {"PYTHONPATH": os.pathsep.join([str(before), str(stamps)])}, before)
    return runs


def time_to_first_step(command: list[str], stamps: Path, env: dict[str, str], cwd: Path = CHECKOUT,
                       limit_s: float = 600.0) -> dict[str, Any]:
    """Run ``command`` (in ``cwd``) until global rank 0's first optimizer step; its stamps relative to the start (seconds).

    The command's stderr goes to a file beside ``stamps`` (a pipe nobody reads before the step could fill and stall it).
    """
    stamps.unlink(missing_ok=True)
    errors = stamps.with_suffix(".stderr.txt")
    load = os.getloadavg()[0]
    started = time.time()
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(command, env={**os.environ, **env, STAMPS_ENV: str(stamps)}, start_new_session=True, cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    events: dict[tuple[int, str], float] = {}
    try:
        while (0, "first_step") not in events:
            if proc.poll() is not None:
                raise RuntimeError(f"{command} ended ({proc.returncode}) before a step:\n{errors.read_text()[-3000:]}")
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


def count_calls(workload: str, root: Path, before: Path | None) -> dict[str, dict[int, dict[str, Any]]]:
    """Each flashdist side's calls and imports up to each rank's first optimizer step (:mod:`startup_calls`), per rank.

    Each side runs twice in its own folder of ``root``; the second run's counts are kept (the first may tokenize).
    """
    from flashdist.bench import startup_calls

    here = Path(startup_calls.__file__)
    modules = root / "stamp_module"  # an older checkout has no startup_calls: copied beside it under another name
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "fd_startup_calls.py").write_text(here.read_text())
    runs = {"flashdist": ("flashdist.bench.startup_calls", str(CHECKOUT), CHECKOUT)}
    if before is not None:  # run in its own checkout, as sides() says why
        runs["before"] = ("fd_startup_calls", os.pathsep.join([str(before), str(modules)]), before)
    counts = {}
    for side, (module, path, cwd) in runs.items():
        command = flashdist_command(workload, root / side, f"{module}.DumpAtFirstStep", entry=module)
        folder = root / "calls" / workload / side
        for _ in range(2):
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
            errors = folder.parent / f"{side}.stderr.txt"
            with open(errors, "w") as stderr:
                done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path, startup_calls.CALLS_ENV: str(folder)},
                                      cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"{command} exited {done.returncode}:\n{errors.read_text()[-3000:]}")
        counts[side] = startup_calls.count(folder)
    return counts


def time_checks(workload: str, root: Path) -> dict[str, float]:
    """The CPU seconds of the pre-launch checks a rank started after them no longer repeats, in this process.

    Builds ``workload``'s config as rank 1 of 2 does (``LOCAL_RANK=1``: no tokenizing, the cache of an
    earlier run read), then times ``FlashdistCLI``'s strategy check and ``check_fit_before_launch``
    (their first call, as a rank makes it). Needs a run of the workload under ``root`` first (its data cache).
    """
    from flashdist.cli.fit import build_cli
    from flashdist.runtime.trainer import check_fit_before_launch, check_strategy_before_launch

    os.environ.update({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"})
    os.chdir(CHECKOUT)  # the configs name their data relative to the checkout, as a run's working directory does
    argv = ["fit", "--config", CONFIGS[workload], f"--trainer.default_root_dir={root / 'flashdist'}", "--trainer.logger=false"]
    cli = build_cli(argv + ([LORA] if workload == "lora" else []), run=False)
    started = time.process_time()
    check_strategy_before_launch(cli.trainer, cli.model, cli.datamodule)
    check_fit_before_launch(cli.trainer, cli.model, cli.datamodule)
    return {"checks_cpu_s": time.process_time() - started}


METHOD = ("seconds from a command's start to global rank 0's first optimizer step (FirstStepStamp), each workload's sides "
          "back to back in every round, who goes first alternating by round; round 0 is a warm-up (caches), not reported; "
          "per workload and side the median over the reported rounds, each ratio the median of its per-round ratios "
          "(both sides of a ratio from the same round); the 1-minute load average with every run")
RATIOS = (("flashdist", "lightning"), ("before", "lightning"), ("flashdist", "before"))  # (numerator, denominator) sides


def check_request(workloads: list[str], before: Path | None) -> None:
    """Refuse, before anything runs, a workload that does not exist, a ``--before`` that is no checkout, or no configs here.

    Example:
        >>> check_request(["quickstart", "lora"], None)  # from a source checkout: nothing raised
    """
    import difflib

    from flashdist.errors import ConfigError

    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown or not workloads:
        guesses = []
        for name in unknown:
            close = difflib.get_close_matches(name, WORKLOADS, n=3, cutoff=0.6)
            guesses.append(f"{name!r}: did you mean {' or '.join(map(repr, close))}?" if close else f"{name!r}: no close match.")
        raise ConfigError(f"--workloads names unknown workload(s) {unknown}." if unknown else "--workloads names no workload.",
                          accepted=WORKLOADS, hint=" ".join(guesses) or "e.g. --workloads quickstart,llm")
    missing = [CONFIGS[name] for name in workloads if not (CHECKOUT / CONFIGS[name]).is_file()]
    if missing:
        raise ConfigError(f"bench startup runs the shipped configs of a source checkout; {missing} are not under {CHECKOUT}.",
                          hint="run it from a clone of flashdist (pip install -e .), not an installed wheel.")
    if before is not None and not (before / "flashdist" / "cli" / "main.py").is_file():
        raise ConfigError(f"--before {str(before)!r} is not a flashdist checkout (no flashdist/cli/main.py in it).",
                          hint="give the root of another clone or worktree, e.g. `git worktree add /tmp/before <commit>`.")
    missing = [CONFIGS[name] for name in workloads if before is not None and not (before / CONFIGS[name]).is_file()]
    if missing:  # the before side runs in its own checkout, on its own configs
        raise ConfigError(f"--before {str(before)!r} has no {missing}.", hint="a checkout with the shipped configs, or other --workloads.")


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per workload, in the order first run: each side's median time to first step and the paired ratios.

    Warm-up rows are left out. A ratio is the median of ``a / b`` over the rounds that timed both sides,
    never a ratio of medians from different moments of a shared machine.

    Example:
        >>> rows = [{"workload": "llm", "side": side, "round": r, "warmup": False, "first_step_s": t, "load_1min": 1.0}
        ...         for r, times in enumerate([(12.0, 10.0), (9.0, 10.0), (11.0, 10.0)]) for side, t in zip(("flashdist", "lightning"), times)]
        >>> summary = summarize(rows)[0]
        >>> summary["first_step_s"], summary["ratios"]["flashdist/lightning"]["per_round"]
        ({'flashdist': 11.0, 'lightning': 10.0}, [1.2, 0.9, 1.1])
    """
    summary = []
    for workload in dict.fromkeys(row["workload"] for row in rows if not row["warmup"]):
        mine = [row for row in rows if row["workload"] == workload and not row["warmup"]]
        by_round: dict[int, dict[str, float]] = {}
        for row in mine:
            by_round.setdefault(row["round"], {})[row["side"]] = row["first_step_s"]
        sides_seen = list(dict.fromkeys(row["side"] for row in mine))
        ratios = {}
        for top, bottom in RATIOS:
            per_round = [round(times[top] / times[bottom], 3) for _, times in sorted(by_round.items()) if top in times and bottom in times]
            if per_round:
                ratios[f"{top}/{bottom}"] = {"median": _median(per_round), "per_round": per_round}
        loads = [row["load_1min"] for row in mine]
        summary.append({"workload": workload, "rounds": len(by_round), "load_1min_range": [min(loads), max(loads)],
                        "first_step_s": {side: _median([r["first_step_s"] for r in mine if r["side"] == side]) for side in sides_seen},
                        "ratios": ratios})
    return summary


def print_summary(summary: list[dict[str, Any]], console: Any) -> None:
    """The summary as a table: medians per side (s), then each paired ratio with its per-round values."""
    from rich.table import Table
    from rich.text import Text

    if not summary:
        console.print("no reported round: round 0 is the warm-up (give --rounds 2 or more)")
        return
    sides_seen = list(dict.fromkeys(side for entry in summary for side in entry["first_step_s"]))
    ratio_names = [f"{a}/{b}" for a, b in RATIOS if any(f"{a}/{b}" in entry["ratios"] for entry in summary)]
    table = Table(title=Text("time to the first optimizer step: medians (s) and paired ratios (median [per round])"))  # Text: no markup
    for column in ["workload", "rounds", "load", *(f"{side} s" for side in sides_seen), *(f"{n.replace('/', ' ÷ ')}" for n in ratio_names)]:
        table.add_column(column, justify="left" if column == "workload" else "right")
    for entry in summary:
        low, high = entry["load_1min_range"]
        cells = [entry["workload"], str(entry["rounds"]), f"{low:.1f}-{high:.1f}"]
        cells += [f"{entry['first_step_s'][side]:.1f}" if side in entry["first_step_s"] else "-" for side in sides_seen]
        for name in ratio_names:
            ratio = entry["ratios"].get(name)
            cells.append("-" if ratio is None else f"{ratio['median']:.2f} [{', '.join(f'{r:.2f}' for r in ratio['per_round'])}]")
        table.add_row(*cells)
    console.print(table)
    console.print(f"method: {METHOD}")


def run(workloads: list[str], rounds: int, root: Path, before: Path | None = None, first_round: int = 0,
        progress: Any = print) -> dict[str, Any]:
    """Time every workload's sides for ``rounds`` rounds under ``root``; the rows, their summary and the method.

    Example:
        >>> result = run(["quickstart"], rounds=3, root=Path("bench-results/startup"))  # doctest: +SKIP
    """
    check_request(workloads, before)
    progress("workload            side       round  load(1min)  first step (s)  rank0 fit start  rank1 start  rank1 fit start"
             "  rank0 built  rank1 built")
    rows = []
    for round_index in range(first_round, first_round + rounds):
        for workload in workloads:
            runs = sides(workload, root, before)
            order = list(runs) if round_index % 2 == 0 else list(reversed(runs))  # alternate who goes first
            for side in order:
                command, env, cwd = runs[side]
                result = time_to_first_step(command, root / "stamps.jsonl", env, cwd)
                result |= {"workload": workload, "side": side, "round": round_index, "warmup": round_index == 0}
                rows.append(result)
                fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
                progress(f"{workload:<19} {side:<10} {round_index:>5}{' (w)' if round_index == 0 else '    '} {result['load_1min']:>6.1f}  "
                         f"{result['first_step_s']:>14.1f}  {fmt(result['rank0_fit_start_s']):>15}  "
                         f"{fmt(result['rank1_process_start_s']):>11}  {fmt(result['rank1_fit_start_s']):>15}  "
                         f"{fmt(result['rank0_built_s']):>11}  {fmt(result['rank1_built_s']):>11}")
    return {"method": METHOD, "settings": {"workloads": workloads, "rounds": rounds, "first_round": first_round,
                                           "before": None if before is None else str(before), "root": str(root)},
            "rows": rows, "summary": summarize(rows)}


if __name__ == "__main__":  # the docs' older spelling; the options are flashdist bench startup's
    from flashdist.cli.bench import run as bench

    sys.exit(bench(["startup", *sys.argv[1:]]))
