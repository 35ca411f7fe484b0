"""``flashdist launch [torchrun options] -- <command>``: build, print and run the torchrun command.

Examples:
    flashdist launch --nproc-per-node 2 -- flashdist fit --config configs/quickstart.yaml
    flashdist launch --nnodes 2 --node-rank 0 --rdzv-endpoint node0:29400 -- train.py   # on node 0
    flashdist launch --nnodes 2 --node-rank 1 --rdzv-endpoint node0:29400 -- train.py   # on node 1
    flashdist launch --nproc-per-node 2 --dry-run -- train.py
    flashdist launch --nnodes 1:2 --max-restarts 1 --rdzv-endpoint node0:29400 ... -- train.py  # elastic
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flashdist.errors import ConfigError
from flashdist.launching.checked import mark_checked

if TYPE_CHECKING:
    from flashdist.launching.torchrun import TorchrunSpec

HELP = "run a command under torchrun (one or many nodes)"


def parser() -> argparse.ArgumentParser:
    from flashdist.launching.torchrun import DEFAULT_RDZV_TIMEOUT_S, SINGLE_NODE_ENDPOINT

    p = argparse.ArgumentParser(
        prog="flashdist launch",
        usage="flashdist launch [options] -- <command or script.py> [args...]",
        description=f"{HELP}. Prints the exact torchrun command, then runs it (c10d rendezvous, bounded timeout).",
    )
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes on this node, one per device (default 1)")
    p.add_argument("--nnodes", type=_nnodes, default=(None, 1), help="nodes in the job (default 1), or MIN:MAX for an elastic "
                   "job that goes on with at least MIN nodes when one is lost (with --max-restarts)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0..nnodes-1; node 0 hosts the rendezvous")
    p.add_argument("--rdzv-endpoint", help=f"HOST:PORT of node 0, the same on every node (default {SINGLE_NODE_ENDPOINT} on one node)")
    p.add_argument("--rdzv-id", default="flashdist", help="job id shared by all nodes of one run (default 'flashdist')")
    p.add_argument("--rdzv-timeout", type=int, default=DEFAULT_RDZV_TIMEOUT_S, help="seconds to wait for all nodes before failing (default %(default)s)")
    p.add_argument("--max-restarts", type=int, default=0, help="restarts of the whole group after a worker fails (default 0)")
    p.add_argument("--local-addr", help="this node's address as the others see it (default 127.0.0.1 on one node)")
    p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    return p


def run(argv: list[str]) -> int:
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    else:
        options, command = argv, []
    args = parser().parse_args(options)
    try:
        from flashdist.launching.torchrun import TorchrunSpec, torchrun_command

        spec = TorchrunSpec(
            nproc_per_node=args.nproc_per_node,
            nnodes=args.nnodes[1],
            min_nnodes=args.nnodes[0],
            node_rank=args.node_rank,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_id=args.rdzv_id,
            rdzv_timeout_s=args.rdzv_timeout,
            max_restarts=args.max_restarts,
            local_addr=args.local_addr,
        )
        full = torchrun_command(spec, command)
    except ConfigError as error:
        print(f"flashdist launch: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(shlex.join(full), flush=True)
        return 0
    fit_argv = flashdist_fit_arguments(command)
    elastic = spec.min_nnodes is not None and spec.min_nnodes < spec.nnodes
    env = dict(os.environ)
    if fit_argv is not None and not elastic:  # an elastic job's size is known only once its nodes joined: the ranks check
        status = check_before_torchrun(spec, fit_argv)
        if status != 0:
            return status
        mark_checked(env, ["flashdist", *fit_argv])  # the workers skip the checks just passed (launching/checked.py)
    print(shlex.join(full), flush=True)
    from flashdist.launching.process import run_foreground

    # torchrun itself, run by flashdist's agent (launching/agent.py): a config error rank 0 already
    # said ends with status 2, not with torchrun's 1 and ChildFailedError report.
    agent = [sys.executable, "-m", "flashdist.launching.agent", *full[1:]]
    return run_foreground(agent, explain=lambda seen: _explain(spec, seen), env=env)


def flashdist_fit_arguments(command: list[str]) -> list[str] | None:
    """``["fit", ...]`` when ``command`` is ``flashdist fit ...`` (or ``python -m flashdist.cli.main fit ...``); else None.

    Example:
        >>> flashdist_fit_arguments(["flashdist", "fit", "--config", "run.yaml"])
        ['fit', '--config', 'run.yaml']
    """
    words = list(command)
    if words and Path(words[0]).name == "flashdist":
        rest = words[1:]
    elif len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "flashdist.cli.main"]:
        rest = words[3:]
    else:
        return None
    return rest if rest[:1] == ["fit"] else None


def check_before_torchrun(spec: TorchrunSpec, fit_argv: list[str]) -> int:
    """Run ``flashdist fit``'s checks in one process, as the node's first worker would see the job; its status.

    Every worker would otherwise run them at once and each print the same ConfigError. The
    check's own output is shown only when it fails (a success's warnings come again from rank 0).
    """
    import subprocess

    from flashdist.launching.torchrun import first_worker_environment

    env = {**os.environ, **first_worker_environment(spec)}
    proc = subprocess.run([sys.executable, "-m", "flashdist.cli.fit", "--check-only", *fit_argv],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        sys.stderr.flush()
    return proc.returncode


def _nnodes(text: str) -> tuple[int | None, int]:
    """``"2"`` → (None, 2); ``"1:2"`` → (1, 2) (torchrun's elastic range)."""
    try:
        if ":" in text:
            low, high = text.split(":")
            return int(low), int(high)
        return None, int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or MIN:MAX") from None


def _explain(spec, seen: set[str]) -> str | None:
    if not seen:
        return None
    return (
        f"flashdist launch: the rendezvous at {spec.endpoint} did not complete within {spec.rdzv_timeout_s}s "
        f"({', '.join(sorted(seen))}): {spec.nnodes} node(s) were expected. HINT: start every node with the same "
        "--nnodes, --rdzv-id and --rdzv-endpoint (an address of node 0 reachable from all nodes), and start node 0."
    )
