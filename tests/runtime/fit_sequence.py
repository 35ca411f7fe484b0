"""Many small fits of ``fit_reliable.py``, one after the other, in the same process(es).

``python tests/runtime/fit_sequence.py CONFIGS.json`` (1 process) or the same after
``torchrun --nproc-per-node 2`` (2 ranks): CONFIGS.json is a list of fit_reliable configs, each
with its own ``root``. The imports, the process start and (under torchrun) the process group are
paid once for the whole list instead of once per fit, which keeps a strategy × direction × policy
matrix of resumes inside the CI budget (as tests/scripts/fit_matrix.py does for issue 14).

Under ``torchrun --max-restarts``, a restarted attempt skips the fits whose summary says they
completed and goes on from the one the failure interrupted (which resumes as any restart does).

A fit that raises writes ``attempt <a>`` and its traceback to ``<root>/error-rank<r>.txt``. In
one process the next fit then runs; under torchrun the sequence stops there (a rank that failed
alone would leave the others inside a collective of that fit, out of step with its next one), so
the tests of the fits after it fail at once, naming the missing summary, instead of hanging.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.runtime.fit_reliable import attempt, main  # noqa: E402


def _completed(root: Path) -> bool:
    summary = root / "summary.json"
    return summary.exists() and bool(json.loads(summary.read_text()).get("completed"))


def run_all(configs: list[dict]) -> int:
    failed = 0
    rank = os.environ.get("RANK", "0")
    for config in configs:
        root = Path(config["root"])
        if attempt() > 0 and _completed(root):
            continue  # done before the restart
        root.mkdir(parents=True, exist_ok=True)
        print(f"fit_sequence: {root.name}", file=sys.stderr, flush=True)
        try:
            main(config)
        except Exception:  # noqa: BLE001 - recorded for the test to read; the next fit runs
            failed += 1
            (root / f"error-rank{rank}.txt").write_text(f"attempt {attempt()}\n{traceback.format_exc()}")
            print(f"fit_sequence: {root.name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise
    return failed


if __name__ == "__main__":
    sys.exit(1 if run_all(json.loads(Path(sys.argv[1]).read_text())) else 0)
