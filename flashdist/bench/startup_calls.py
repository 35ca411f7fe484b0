"""``flashdist bench startup --calls``: what a fit does before its first optimizer step, counted, not timed.

``python -m flashdist.bench.startup_calls fit --config ...`` runs ``flashdist`` under cProfile from its
first line; :class:`DumpAtFirstStep` (given to the Trainer as a callback) writes, at each rank's first
optimizer step, that rank's profile and the names of the modules imported by then to the folder
``$FLASHDIST_STARTUP_CALLS``, and stops the fit. Counts compare two checkouts on a loaded machine where
times cannot: :func:`count` reads a folder, :func:`compare` pairs two.

This module needs only Lightning and the standard library: ``bench startup --before`` copies it beside
an older checkout under another name, as it does the stamp callback.
"""

from __future__ import annotations

import cProfile
import collections
import json
import os
import pstats
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

CALLS_ENV = "FLASHDIST_STARTUP_CALLS"
PROFILE = cProfile.Profile()


class DumpAtFirstStep(Callback):
    """At this rank's first optimizer step: ``rank<R>.prof`` and ``rank<R>.modules.json`` into ``$FLASHDIST_STARTUP_CALLS``."""

    def __init__(self) -> None:
        self.done = False

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if self.done or trainer.global_step < 1:  # global_step counts optimizer steps
            return
        # the profiler main() started: this module runs as __main__, and the config's class_path imports a second copy
        profile = sys.modules["__main__"].PROFILE
        profile.disable()
        self.done = True
        folder = Path(os.environ[CALLS_ENV])
        profile.dump_stats(folder / f"rank{trainer.global_rank}.prof")
        (folder / f"rank{trainer.global_rank}.modules.json").write_text(json.dumps(sorted(sys.modules)))
        trainer.should_stop = True  # every rank stops after the same step: no rank waits in a collective for a stopped one


def package_of(filename: str) -> str:
    """Who a profiled function belongs to: a site-packages distribution's folder, flashdist, stdlib, builtins.

    Example:
        >>> package_of("/venv/lib/python3.11/site-packages/torch/nn/modules/module.py"), package_of("/src/flashdist/text/lm.py")
        ('torch', 'flashdist')
    """
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/flashdist/" in filename:
        return "flashdist"
    if filename.startswith("~"):
        return "builtins"
    return "import machinery" if filename.startswith("<frozen") else "stdlib"


def count(folder: Path) -> dict[int, dict[str, Any]]:
    """Per rank: calls per package and the modules imported, from a folder :class:`DumpAtFirstStep` wrote."""
    counts = {}
    for profile in sorted(folder.glob("rank*.prof")):
        rank = int(profile.stem.removeprefix("rank"))
        calls: collections.Counter[str] = collections.Counter()
        for (filename, _, _), (_, total_calls, *_) in pstats.Stats(str(profile)).stats.items():  # type: ignore[attr-defined]
            calls[package_of(filename)] += total_calls
        modules = json.loads((folder / f"rank{rank}.modules.json").read_text())
        counts[rank] = {"calls": dict(calls), "modules": modules}
    return counts


def compare(before: dict[str, Any], after: dict[str, Any], top: int = 8) -> dict[str, Any]:
    """One rank's counts, ``after`` against ``before``: totals, the packages whose calls changed most, the modules only one imports.

    Example:
        >>> b = {"calls": {"torch": 10, "peft": 5}, "modules": ["torch", "peft"]}
        >>> a = {"calls": {"torch": 12}, "modules": ["torch"]}
        >>> compare(b, a)["calls_changed"], compare(b, a)["modules_only_before"]
        ([('peft', 5, 0), ('torch', 10, 12)], ['peft'])
    """
    packages = set(before["calls"]) | set(after["calls"])
    changed = sorted(((p, before["calls"].get(p, 0), after["calls"].get(p, 0)) for p in packages),
                     key=lambda row: (-abs(row[2] - row[1]), row[0]))
    return {"calls": (sum(before["calls"].values()), sum(after["calls"].values())),
            "modules": (len(before["modules"]), len(after["modules"])),
            "calls_changed": [row for row in changed if row[1] != row[2]][:top],
            "modules_only_before": sorted(set(before["modules"]) - set(after["modules"])),
            "modules_only_after": sorted(set(after["modules"]) - set(before["modules"]))}


def report(workload: str, counts: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """Lines for one workload: each rank's totals per side and, with a ``before`` side, what changed."""
    lines = []
    for rank in sorted(counts["flashdist"]):
        sides = " against ".join(f"{side} {len(c[rank]['modules']):,} modules, {sum(c[rank]['calls'].values()):,} calls"
                                 for side, c in counts.items() if rank in c)
        lines.append(f"{workload} rank {rank}, up to its first optimizer step: {sides}")
        if "before" not in counts or rank not in counts["before"]:
            continue
        diff = compare(counts["before"][rank], counts["flashdist"][rank])
        lines.append("  calls that changed most (before -> flashdist): "
                     + "; ".join(f"{package} {old:,} -> {new:,}" for package, old, new in diff["calls_changed"]))
        for side, only in (("before", diff["modules_only_before"]), ("flashdist", diff["modules_only_after"])):
            tops = collections.Counter(name.split(".")[0] if not name.startswith("flashdist.") else name for name in only)
            lines.append(f"  modules only {side} imports: {len(only)}"
                         + (f" ({', '.join(f'{top} {n}' if n > 1 else top for top, n in tops.most_common(12))})" if only else ""))
    return lines


def main() -> int:
    PROFILE.enable()  # before flashdist's first import: its imports are counted too
    from flashdist.cli.main import main as flashdist

    return flashdist(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
