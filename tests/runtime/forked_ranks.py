"""Segments of ``fit_sequence.py`` fits on 2 real ranks forked from one process that imported once.

``python tests/runtime/forked_ranks.py SEGMENTS.json``: a list of ``{"attempt": k, "ranks": n,
"configs": [fit_reliable configs]}``. For each segment this process forks ``n`` ranks (env
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT``, ``FIT_ATTEMPT=k``: an external launch,
as torchrun's) that run the segment's fits one after the other over their own gloo group, then
exit. A segment may end with a rank killing itself (``kill -9``, fit_reliable's
``kill_after_micro_batches``): that rank's group is then taken down as torchrun takes it down
(here with SIGKILL, so a survivor never waits on its dead peer) and the next segment resumes it.

Why forked, not one torchrun per segment: a kill -9 ends a process, so N killed cases need N + 1
process lifetimes, and on this project's 2-core CI each 2-process start (torch, Lightning,
DeepSpeed imports) costs 20-30 s. Forking after the imports (and before any process group or
tensor work: this process runs no training, no threads of its own) pays them once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# What a rank's first fit would import (measured: 700 modules, 10 s of its first fit on this
# machine), imported once here and inherited by every forked rank. Imports only: no tensor work.
import deepspeed  # noqa: E402,F401
import deepspeed.ops.adam  # noqa: E402,F401
import deepspeed.runtime.engine  # noqa: E402,F401
import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: E402,F401 - DeepSpeed imports it to check a ZeRO optimizer: 7 s
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401
import torch._dynamo  # noqa: E402,F401
import torch.distributed.checkpoint  # noqa: E402,F401
import torch.distributed.fsdp  # noqa: E402,F401
import flashdist.runtime.report  # noqa: E402,F401
import flashdist.strategies  # noqa: E402,F401

from tests.fitting import free_port  # noqa: E402
from tests.runtime.fit_sequence import run_all  # noqa: E402


def _rank(rank: int, ranks: int, port: int, attempt: int, configs: list[dict]) -> None:
    """The forked child: one rank of the segment's group; never returns."""
    code = 1
    try:
        os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks),
                           "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "FIT_ATTEMPT": str(attempt)})
        if ranks == 1:
            for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
                del os.environ[name]
        code = 1 if run_all(configs) else 0
    except BaseException:  # noqa: BLE001 - reported, then the rank's exit code says it failed
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_segment(segment: dict) -> list[int]:
    """Fork the segment's ranks and wait for them; a rank killed by a signal takes the others down. Wait statuses."""
    ranks, port = segment.get("ranks", 2), free_port()
    sys.stdout.flush()  # else each rank would write this process's buffered output again
    sys.stderr.flush()
    pids = []
    for rank in range(ranks):
        pid = os.fork()
        if pid == 0:
            _rank(rank, ranks, port, segment["attempt"], segment["configs"])
        pids.append(pid)
    statuses = {}
    while len(statuses) < len(pids):
        pid, status = os.waitpid(-1, 0)
        statuses[pid] = status
        if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
            # A rank died (kill -9) or failed: its group goes down with it, as under torchrun (a
            # survivor could otherwise wait in a collective with it until the process-group timeout).
            for other in pids:
                if other not in statuses:
                    os.kill(other, signal.SIGKILL)
    return [statuses[pid] for pid in pids]


def main(segments: list[dict]) -> int:
    for index, segment in enumerate(segments):
        print(f"forked_ranks: segment {index} (attempt {segment['attempt']})", file=sys.stderr, flush=True)
        described = []
        for rank, status in enumerate(run_segment(segment)):
            described.append(f"rank {rank}: " + (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"))
        print(f"forked_ranks: segment {index} ended: {', '.join(described)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(Path(sys.argv[1]).read_text())))
