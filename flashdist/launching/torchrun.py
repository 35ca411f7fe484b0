"""The exact ``torchrun`` command for a launch, as a pure function of a frozen spec.

Every launch uses the c10d rendezvous (torchrun's own, no etcd) with a bounded timeout: a node
that cannot reach the endpoint, or a group that never fills, ends with an error instead of
waiting forever (torchrun's default is 600 s of silence).
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from flashdist.errors import ConfigError, require_positive_int

SINGLE_NODE_ENDPOINT = "127.0.0.1:0"  # what `torchrun --standalone` does: a free port on this host
DEFAULT_RDZV_TIMEOUT_S = 300
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"


@dataclass(frozen=True)
class TorchrunSpec:
    """One node's torchrun launch. ``rdzv_endpoint`` is required when ``nnodes > 1``.

    ``min_nnodes`` < ``nnodes`` makes the job elastic (torchrun's ``--nnodes MIN:MAX``): when a
    node is lost the survivors (at least ``min_nnodes``) re-form the group, within
    ``--max-restarts``, after waiting ``last_call_s`` for late nodes.
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    min_nnodes: int | None = None
    last_call_s: int = 10
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = "flashdist"
    rdzv_timeout_s: int = DEFAULT_RDZV_TIMEOUT_S
    max_restarts: int = 0
    local_addr: str | None = None

    def __post_init__(self) -> None:
        _positive("--nproc-per-node", self.nproc_per_node)
        _positive("--nnodes", self.nnodes)
        if self.min_nnodes is not None:
            _positive("--nnodes MIN", self.min_nnodes)
            if self.min_nnodes > self.nnodes:
                raise ConfigError(f"--nnodes {self.min_nnodes}:{self.nnodes}: MIN is above MAX.", accepted="MIN:MAX with MIN <= MAX")
        _positive("--rdzv-timeout", self.rdzv_timeout_s)
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"--node-rank {self.node_rank} is outside --nnodes {self.nnodes}.",
                accepted=f"0..{self.nnodes - 1}",
                hint="number the nodes 0, 1, ... with node 0 hosting the rendezvous endpoint.",
            )
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts {self.max_restarts} is negative.", accepted="0 or more")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ConfigError(
                f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT.",
                hint="use an address of node 0 that every node can reach, the same on every node, e.g. --rdzv-endpoint node0:29400.",
            )
        if self.rdzv_endpoint is not None and not re.fullmatch(r"[\w.\-]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", self.rdzv_endpoint):
            raise ConfigError(f"--rdzv-endpoint {self.rdzv_endpoint!r} is not HOST:PORT.", accepted="HOST:PORT, e.g. 10.0.0.1:29400")
        if not re.fullmatch(r"[\w.\-]+", self.rdzv_id):
            raise ConfigError(f"--rdzv-id {self.rdzv_id!r} has characters torchrun cannot pass on.", accepted="letters, digits, . _ -")

    @property
    def endpoint(self) -> str:
        return self.rdzv_endpoint or SINGLE_NODE_ENDPOINT


def torchrun_command(spec: TorchrunSpec, command: list[str]) -> list[str]:
    """The argv that runs ``command`` under torchrun.

    A ``*.py`` first word runs as torchrun's script (with torchrun's Python); anything else
    (``flashdist fit ...``, ``python -m ...``) runs as given, through ``--no-python``.

    Example:
        >>> torchrun_command(TorchrunSpec(nproc_per_node=2), ["train.py", "--lr", "0.1"])[1:6]
        ['--nproc-per-node', '2', '--nnodes', '1', '--node-rank']
    """
    if not command:
        raise ConfigError("no command to launch.", hint="put it after '--': flashdist launch --nproc-per-node 2 -- train.py")
    # node 0 hosts the rendezvous store; others only connect, so a wrong endpoint fails within the timeout
    rdzv_conf = f"join_timeout={spec.rdzv_timeout_s},read_timeout={spec.rdzv_timeout_s},is_host={str(spec.node_rank == 0).lower()}"
    elastic = spec.min_nnodes is not None and spec.min_nnodes < spec.nnodes
    if elastic:
        rdzv_conf += f",last_call_timeout={spec.last_call_s}"
    argv = [
        _torchrun_executable(),
        "--nproc-per-node", str(spec.nproc_per_node),
        "--nnodes", f"{spec.min_nnodes}:{spec.nnodes}" if elastic else str(spec.nnodes),
        "--node-rank", str(spec.node_rank),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", spec.endpoint,
        "--rdzv-id", spec.rdzv_id,
        "--rdzv-conf", rdzv_conf,
        "--max-restarts", str(spec.max_restarts),
        # SLURM's preemption/time-limit signal must reach the workers, not kill the agent
        "--signals-to-handle", FORWARDED_SIGNALS,
    ]  # fmt: skip
    local_addr = spec.local_addr or ("127.0.0.1" if spec.nnodes == 1 else None)
    if local_addr:
        argv += ["--local-addr", local_addr]
    if command[0].endswith(".py"):
        return argv + command
    return argv + ["--no-python", *_resolve_program(command)]


def first_worker_environment(spec: TorchrunSpec) -> dict[str, str]:
    """The variables torchrun gives a worker, for a check run on this node before torchrun starts.

    A process with them sees the topology the workers will (``flashdist.Trainer``'s devices and
    num_nodes, launching/topology.py). ``RANK`` is 0 on every node: the check speaks for its
    node (one per ``flashdist launch`` typed), so its ConfigError is printed there, not left to
    global rank 0 (runtime/said_once.py). An elastic job would count its largest size (flashdist
    launch does not pre-check those: how many nodes join is known only then).

    Example:
        >>> first_worker_environment(TorchrunSpec(nproc_per_node=2, nnodes=2, node_rank=1, rdzv_endpoint="n0:29400"))["GROUP_RANK"]
        '1'
    """
    return {
        "TORCHELASTIC_RUN_ID": spec.rdzv_id,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "GROUP_RANK": str(spec.node_rank),
        "LOCAL_WORLD_SIZE": str(spec.nproc_per_node),
        "WORLD_SIZE": str(spec.nnodes * spec.nproc_per_node),
        "MASTER_ADDR": spec.endpoint.rsplit(":", 1)[0].strip("[]"),
        "MASTER_PORT": spec.endpoint.rsplit(":", 1)[1],
    }


def _torchrun_executable() -> str:
    beside_python = Path(sys.executable).parent / "torchrun"
    return str(beside_python) if beside_python.exists() else (shutil.which("torchrun") or "torchrun")


def _resolve_program(command: list[str]) -> list[str]:
    """``flashdist`` may not be on PATH (a venv not activated): use the one beside this Python."""
    if command[0] == "flashdist" and shutil.which("flashdist") is None:
        beside_python = Path(sys.executable).parent / "flashdist"
        if beside_python.exists():
            return [str(beside_python), *command[1:]]
    return command


def _positive(flag: str, value: int) -> None:
    require_positive_int(value, f"{flag} {value!r}")
