"""Host syncs per training step: what flashdist adds over plain Lightning, and where each one comes from.

    flashdist bench syncs [--devices 1,2] [--steps 20]
    python -m flashdist.bench.syncs '<config json>'   (one process, or each rank under torchrun)

A host sync is a read of a tensor's value on the host: ``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()`` of one element... all dispatch to ``aten::_local_scalar_dense``, which on a GPU is a
blocking device-to-host copy that drains the stream. On CPU it costs nothing, but it is counted
the same: torch's profiler records every ``aten::_local_scalar_dense`` with the Python stack
that called it, so each sync is named by its source line. (``aten::item`` calls it, so counting
``_local_scalar_dense`` counts each sync once.)

Each variant trains the ``mlp`` workload for ``warmup + steps`` steps; the profiler records
only the ``steps`` steady-state steps, which end before Lightning's first logged step
(``log_every_n_steps`` 50), so the count is what a step between logged steps costs. Per
strategy, flashdist is compared with plain Lightning under the same strategy (and the hand
written loop is shown as the floor); with clipping, a logger and the progress bar, plain
Lightning and flashdist both get the same Trainer arguments.

``--device cuda`` runs the same fits on the GPU; there the profiled window also runs under
``torch.cuda.set_sync_debug_mode("warn")``, which warns at every synchronizing CUDA call (a
device-to-host copy, ``nonzero``, a blocking ``.cpu()``), item reads or not: those warnings are
counted per step beside the profiler's count, by the Python line that made the call.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SYNC_OP = "aten::_local_scalar_dense"
# flashdist strategy name -> (hand-written loop, plain Lightning harness)
BASELINES = {"ddp": ("torch", "lightning"), "deepspeed_stage_2": ("deepspeed", "lightning_ds"), "fsdp": ("fsdp2", "lightning_fsdp2")}
STRATEGIES = tuple(BASELINES)
# Trainer arguments of the extra columns, given to plain Lightning and flashdist alike.
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "clip": {"gradient_clip_val": 1.0},
    "logger+bar": {"enable_progress_bar": True},  # the logger is added per fit (it needs the fit's directory)
}


@dataclass
class SyncCount:
    """Syncs seen over ``steps`` profiled steps, by the source line that caused each."""

    steps: int
    sources: Counter[str] = field(default_factory=Counter)
    cuda_syncs: Counter[str] | None = None  # set_sync_debug_mode("warn")'s warnings, by line (on CUDA only)

    @property
    def per_step(self) -> float:
        return sum(self.sources.values()) / self.steps


class _Window:
    """The step stamp of a harness: starts the profiler after ``warmup`` steps, stops it ``steps`` later."""

    def __init__(self, warmup: int, steps: int, device: str = "cpu") -> None:
        self.warmup, self.steps, self.seen = warmup, steps, 0
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True)
        self.cuda = device == "cuda"
        self._catching: Any = None
        self._caught: list[warnings.WarningMessage] = []

    def __call__(self) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            self.profiler.start()
            if self.cuda:
                self._catching = warnings.catch_warnings(record=True)
                self._caught = self._catching.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
        elif self.seen == self.warmup + self.steps:
            if self.cuda:
                torch.cuda.set_sync_debug_mode("default")
                self._catching.__exit__(None, None, None)
            self.profiler.stop()

    def count(self) -> SyncCount:
        if self.seen < self.warmup + self.steps:
            raise RuntimeError(f"the fit took {self.seen} steps, fewer than the {self.warmup + self.steps} profiled")
        result = SyncCount(self.steps)
        if self.cuda:
            result.cuda_syncs = Counter(f"{_short(w.filename)}:{w.lineno}" for w in self._caught
                                        if "synchroniz" in str(w.message))
        # the event tree links each op to the Python frames around it (with_stack); torch 2.13 leaves
        # the flat events' ``stack`` empty for aten ops
        nodes = list(self.profiler.profiler.kineto_results.experimental_event_tree())  # type: ignore[union-attr]
        while nodes:
            node = nodes.pop()
            nodes.extend(node.children)
            if _name(node) == SYNC_OP:
                frames, parent = [], node.parent
                while parent is not None:
                    frames.append(_name(parent))
                    parent = parent.parent
                result.sources[source_line(frames)] += 1
        return result


def _name(node: Any) -> str:
    try:
        return node.name
    except UnicodeDecodeError:  # seen on some events of a whole fit (torch 2.13): not a frame we can name
        return "<undecodable>"


def syncs_during(fn: Any) -> Counter[str]:
    """Run ``fn()`` under the profiler; the host syncs it made, by :func:`source_line`.

    Example:
        >>> dict(syncs_during(lambda: float(torch.ones(2).sum())))  # doctest: +ELLIPSIS
        {'...<lambda> ...': 1}
    """
    window = _Window(warmup=0, steps=1)
    window.profiler.start()
    try:
        fn()
    finally:
        window.profiler.stop()
        window.seen = 1
    return window.count().sources


def source_line(stack: list[str]) -> str:
    """The Python function that read the value (innermost frame first in ``stack``) and its caller.

    The profiler names a frame by the file and the line its function starts on.

    Example:
        >>> source_line(["aten::item", "torch/_tensor.py(1100): __float__", "flashdist/x.py(12): f", "lightning/y.py(3): g"])
        'flashdist/x.py(12): f <- lightning/y.py(3): g'
    """
    frames = [_short(f) for f in stack if not f.startswith(("aten::", "<built-in")) and "torch/_tensor.py" not in f]
    # the caller: past generic helpers (apply_to_collection and the like), the first frame that says why
    callers = [f for f in frames[1:] if "apply_func.py" not in f and "/nn/modules/module.py" not in f]
    return " <- ".join(frames[:1] + callers[:1]) or "?"


def _short(frame: str) -> str:
    for marker in ("site-packages/", "/flashdist/"):
        if marker in frame:
            head = "flashdist/" if marker == "/flashdist/" else ""
            return head + frame.split(marker, 1)[1]
    return frame


def variants(strategies: tuple[str, ...] = STRATEGIES, options: tuple[str, ...] = tuple(OPTIONS),
             hand: bool = True) -> list[tuple[str, str, str]]:
    """(strategy, harness, option) of every fit: each strategy's hand loop (plain only, when ``hand``),
    and plain Lightning and flashdist under every option.

    Example:
        >>> variants(("ddp",), ("plain",))
        [('ddp', 'torch', 'plain'), ('ddp', 'lightning', 'plain'), ('ddp', 'flashdist', 'plain')]
    """
    out = []
    for strategy in strategies:
        hand_loop, lightning = BASELINES[strategy]
        out += [(strategy, hand_loop, "plain")] if hand else []
        out += [(strategy, name, option) for option in options for name in (lightning, "flashdist")]
    return out


def count_one(strategy: str, name: str, option: str, world: int, warmup: int, steps: int, device: str = "cpu") -> SyncCount:
    from lightning.pytorch.loggers import CSVLogger

    from flashdist.bench.harnesses import flashdist_fit, harness, plain_lightning
    from flashdist.bench.workloads import workload

    mlp = workload("mlp", device)
    total = warmup + steps + 1
    samples = mlp.samples(total * mlp.batch_size * world)
    window = _Window(warmup, steps, device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="flashdist-syncs-") as root:
        extras = dict(OPTIONS[option])
        if option == "logger+bar":
            extras["logger"] = CSVLogger(root)
        if name == "flashdist":
            fit = flashdist_fit(strategy, one_process_strategy=strategy, extras=extras)
        elif name.startswith("lightning"):
            plain = {"lightning": "ddp", "lightning_ds": "deepspeed", "lightning_fsdp2": "fsdp2"}[name]
            fit = lambda *args: plain_lightning(*args, strategy=plain, extras=extras)  # noqa: E731
        else:
            fit = harness(name, strategy)
        fit(mlp, samples, total, world, root, window)
    return window.count()


def run_here(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every variant of ``config`` in this process (each rank runs the same sequence); one record each."""
    from flashdist.bench.fit_worker import _quiet

    _quiet()
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    random.seed(0)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    records = []
    chosen = variants(tuple(config["strategies"]), tuple(config.get("options", OPTIONS)), config.get("hand", True))
    for strategy, name, option in chosen:
        count = count_one(strategy, name, option, world, config["warmup_steps"], config["steps"], config.get("device", "cpu"))
        record = {"devices": world, "strategy": strategy, "harness": name, "option": option,
                  "per_step": count.per_step, "sources": {k: v / count.steps for k, v in count.sources.most_common()}}
        if count.cuda_syncs is not None:
            record["cuda_syncs_per_step"] = sum(count.cuda_syncs.values()) / count.steps
            record["cuda_sync_sources"] = {k: v / count.steps for k, v in count.cuda_syncs.most_common()}
        records.append(record)
    return records


def excess(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """flashdist's syncs per step minus plain Lightning's, per (devices, strategy, option).

    Example:
        >>> rows = [{"devices": 1, "strategy": "ddp", "harness": "lightning", "option": "plain", "per_step": 5.0},
        ...         {"devices": 1, "strategy": "ddp", "harness": "flashdist", "option": "plain", "per_step": 5.0}]
        >>> excess(rows)[0]["excess"]
        0.0
    """
    by_key = {(r["devices"], r["strategy"], r["harness"], r["option"]): r["per_step"] for r in records}
    out = []
    for (devices, strategy, name, option), value in by_key.items():
        if name != "flashdist":
            continue
        lightning = by_key[(devices, strategy, BASELINES[strategy][1], option)]
        hand = by_key.get((devices, strategy, BASELINES[strategy][0], "plain"))
        out.append({"devices": devices, "strategy": strategy, "option": option, "hand": hand, "lightning": lightning,
                    "flashdist": value, "excess": value - lightning})
    return out


def run(devices: list[int], strategies: list[str] | None = None, steps: int = 20, warmup_steps: int = 5,
        options: list[str] | None = None, hand: bool = True, timeout_s: float = 1800, progress: Any = None,
        device: str = "cpu") -> dict[str, Any]:
    """Count every variant at each process count (one launch per count: 2+ processes under torchrun)."""
    import subprocess

    from flashdist.bench.device import check_device

    device = check_device(device, processes=max(devices))
    records: list[dict[str, Any]] = []
    for count in devices:
        with tempfile.TemporaryDirectory(prefix="flashdist-syncs-") as tmp:
            out = Path(tmp) / "records.json"
            config = {"strategies": list(strategies or STRATEGIES), "steps": steps, "warmup_steps": warmup_steps,
                      "options": list(options or OPTIONS), "hand": hand, "out": str(out), "device": device}
            # torchrun at one process too: DeepSpeed (and the strategies' process group) read its environment
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}",
                       "-m", "flashdist.bench.syncs", json.dumps(config)]
            if progress:
                progress(f"bench syncs: {count} process(es)")
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"bench syncs at {count} process(es) failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
            records += json.loads(out.read_text())
    load = os.getloadavg()[0]
    return {"records": records, "excess": excess(records), "load_1min": load, "steps": steps, "warmup_steps": warmup_steps,
            "device": device,
            "method": __doc__.split("\n\n", 2)[2].strip() if __doc__ else ""}


def print_table(result: dict[str, Any], console: Any) -> None:
    """The excess table, then every sync's source line per variant (per step)."""
    from rich.table import Table

    table = Table(title=f"host syncs per step (aten::_local_scalar_dense), {result['steps']} profiled steps after {result['warmup_steps']}")
    for column in ("devices", "strategy", "option", "hand loop", "plain Lightning", "flashdist", "flashdist excess"):
        table.add_column(column)
    for row in result["excess"]:
        hand = "" if row["option"] != "plain" or row["hand"] is None else f"{row['hand']:.2f}"
        table.add_row(str(row["devices"]), row["strategy"], row["option"], hand, f"{row['lightning']:.2f}",
                      f"{row['flashdist']:.2f}", f"{row['excess']:+.2f}")
    console.print(table)
    for record in result["records"]:
        console.print(f"[bold]{record['devices']}p {record['strategy']}/{record['harness']} {record['option']}[/bold]: "
                      f"{record['per_step']:.2f} per step")
        for where, per_step in record["sources"].items():
            console.print(f"  {per_step:5.2f}  {where}", highlight=False)
        if "cuda_syncs_per_step" in record:
            console.print(f"  CUDA sync debug mode: {record['cuda_syncs_per_step']:.2f} synchronizing calls per step")
            for where, per_step in record["cuda_sync_sources"].items():
                console.print(f"  {per_step:5.2f}  {where}", highlight=False)
    console.print(f"load average (1 min) at the end: {result['load_1min']:.1f}")


def main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    records = run_here(config)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(config["out"]).write_text(json.dumps(records))


if __name__ == "__main__":
    main(sys.argv[1:])
