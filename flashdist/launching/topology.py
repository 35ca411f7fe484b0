"""Devices and nodes as the launcher gave them (torchrun, SLURM), checked against the config.

When a launcher started the processes, it alone knows how many there are per node and how many
nodes joined. ``Trainer(devices=..., num_nodes=...)`` left out, ``None`` or ``"auto"`` takes the
launcher's numbers; an explicit value that disagrees is a :class:`~flashdist.ConfigError` at
construction, before any process group forms (Lightning would otherwise fail late, or wait on
ranks that never come).

Detection follows Lightning's own rules (``TorchElasticEnvironment.detect``, ``SLURMEnvironment.detect``),
with one fix: a ``torchrun`` started inside an ``srun`` task sees both sets of variables, and
Lightning would pick SLURM's (one rank per SLURM task) although torchrun made the processes;
flashdist then hands Lightning a ``TorchElasticEnvironment`` explicitly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flashdist.compat.lightning import launched_by_srun
from flashdist.errors import ConfigError

_AUTO = (None, "auto", -1, "-1")
_DEVICES_HINT = "under a launcher, devices: auto takes the count the launcher started."


@dataclass(frozen=True)
class LaunchTopology:
    """What the launcher started: ``devices_per_node`` processes on each of ``num_nodes`` nodes."""

    launcher: Literal["torchrun", "slurm"]
    devices_per_node: int
    num_nodes: int
    world_size: int
    evidence: str  # the environment variables it was read from, for messages

    @property
    def relaunch_hint(self) -> str:
        if self.launcher == "torchrun":
            return "or relaunch with matching --nproc-per-node / --nnodes (flashdist launch)"
        return "or resubmit with matching --ntasks-per-node / --nodes (flashdist slurm --tasks-per-node/--gpus-per-node/--nodes)"


def detect_launch_topology(environ: Mapping[str, str] | None = None) -> LaunchTopology | None:
    """The launcher's topology, or ``None`` when no launcher started this process.

    Example:
        >>> detect_launch_topology({"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}).num_nodes
        2
    """
    env = os.environ if environ is None else environ
    if env.get("TORCHELASTIC_RUN_ID") is not None and "LOCAL_WORLD_SIZE" in env:  # torchrun sets both
        return _torchrun(env)
    if _slurm_detected(env):
        return _slurm(env)
    return None


def apply_launch_topology(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Fill ``devices``/``num_nodes`` from the launcher, or refuse a config that disagrees with it.

    Example (under ``torchrun --nnodes 2 --nproc-per-node 1``):
        >>> apply_launch_topology({"accelerator": "cpu"})  # doctest: +SKIP
        {'accelerator': 'cpu', 'devices': 1, 'num_nodes': 2}
    """
    kwargs = dict(kwargs)
    topology = detect_launch_topology()
    if topology is None:
        if kwargs.get("num_nodes", 1) in _AUTO:
            kwargs["num_nodes"] = 1
        _refuse_nodes_nobody_launched(kwargs["num_nodes"] if "num_nodes" in kwargs else 1)
        return kwargs
    kwargs["devices"] = _resolve_devices(kwargs.get("devices"), topology)
    kwargs["num_nodes"] = _resolve_num_nodes(kwargs.get("num_nodes"), topology)
    if topology.launcher == "torchrun" and _slurm_detected(os.environ):
        kwargs["plugins"] = _with_torchelastic_environment(kwargs.get("plugins"))
    return kwargs


# ---- reading the launchers ------------------------------------------------------------------
def _torchrun(env: Mapping[str, str]) -> LaunchTopology:
    local, world = _int(env, "LOCAL_WORLD_SIZE"), _int(env, "WORLD_SIZE")
    nodes = _int(env, "GROUP_WORLD_SIZE") if "GROUP_WORLD_SIZE" in env else world // max(local, 1)
    evidence = f"LOCAL_WORLD_SIZE={local}, WORLD_SIZE={world}" + (f", GROUP_WORLD_SIZE={nodes}" if "GROUP_WORLD_SIZE" in env else "")
    if local < 1 or local * nodes != world:
        raise ConfigError(
            f"torchrun started an uneven topology ({evidence}): flashdist needs the same number of processes on every node.",
            hint="give every node the same --nproc-per-node.",
        )
    return LaunchTopology("torchrun", local, nodes, world, evidence)


def _slurm_detected(env: Mapping[str, str]) -> bool:
    return launched_by_srun(env)  # Lightning's rule (SLURMEnvironment.detect), on this environment


def _slurm(env: Mapping[str, str]) -> LaunchTopology:
    world = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
    nodes_var = next((v for v in ("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES") if v in env), None)
    nodes = _int(env, nodes_var) if nodes_var else 1
    per_node_var = next((v for v in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") if v in env), None)
    counts = _expand_tasks_per_node(env[per_node_var]) if per_node_var else [world // max(nodes, 1)]
    evidence = f"SLURM_NTASKS={world}, {nodes_var}={nodes}" + (f", {per_node_var}={env[per_node_var]}" if per_node_var else "")
    if len(set(counts)) != 1 or counts[0] * nodes != world:
        raise ConfigError(
            f"SLURM started an uneven topology ({evidence}): flashdist needs the same number of tasks on every node.",
            hint="submit with --ntasks-per-node (flashdist slurm writes it) instead of a bare --ntasks.",
        )
    return LaunchTopology("slurm", counts[0], nodes, world, evidence)


def _expand_tasks_per_node(text: str) -> list[int]:
    """SLURM's compressed form: ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    counts: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ConfigError(f"cannot read SLURM's tasks per node {text!r}.", hint="submit with --ntasks-per-node.")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise ConfigError(f"the launcher set {name}={env.get(name)!r}; expected an integer.", hint="launch with torchrun or srun unmodified.") from None


# ---- checking the config against them -------------------------------------------------------
def _resolve_devices(devices: Any, topology: LaunchTopology) -> int | list[int]:
    if devices in _AUTO:
        return topology.devices_per_node
    asked = _count_devices(devices)
    if asked != topology.devices_per_node:
        raise ConfigError(
            f"Trainer(devices={devices!r}) asks for {asked} process(es) per node, but {topology.launcher} started "
            f"{topology.devices_per_node} per node ({topology.evidence}).",
            accepted=f"devices={topology.devices_per_node} or 'auto' (take it from the launcher)",
            hint=f"set devices to 'auto' or {topology.devices_per_node} (YAML: trainer.devices: auto), {topology.relaunch_hint}.",
        )
    return devices


def _resolve_num_nodes(num_nodes: Any, topology: LaunchTopology) -> int:
    if num_nodes in _AUTO:
        return topology.num_nodes
    if num_nodes != topology.num_nodes:
        raise ConfigError(
            f"Trainer(num_nodes={num_nodes!r}) but {topology.launcher} started {topology.num_nodes} node(s) ({topology.evidence}).",
            accepted=f"num_nodes={topology.num_nodes} or 'auto' (take it from the launcher)",
            hint=f"set num_nodes to {topology.num_nodes} (YAML: trainer.num_nodes: {topology.num_nodes}, or --trainer.num_nodes={topology.num_nodes}; "
            f"in Python num_nodes='auto' also works), {topology.relaunch_hint}.",
        )
    return num_nodes


def _refuse_nodes_nobody_launched(num_nodes: Any) -> None:
    """num_nodes > 1 with no launcher and no manual NODE_RANK: the first node would wait for the others forever."""
    if isinstance(num_nodes, int) and num_nodes > 1 and "NODE_RANK" not in os.environ:
        raise ConfigError(
            f"Trainer(num_nodes={num_nodes}) but no launcher started this process (no torchrun or srun environment), "
            "so no other node will join and the run would wait for them.",
            hint="launch each node with `flashdist launch --nnodes ... --node-rank ...` or submit with `flashdist slurm --nodes ...` "
            "(or, Lightning's manual way, set NODE_RANK, MASTER_ADDR and MASTER_PORT on every node); on one node, set num_nodes to 1.",
        )


def _count_devices(devices: Any) -> int:
    if isinstance(devices, bool):
        raise ConfigError(f"devices={devices!r} is not a device count.", accepted="an int, a list of indices, or 'auto'", hint=_DEVICES_HINT)
    if isinstance(devices, int):
        return devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and re.fullmatch(r"\s*\d+\s*", devices):
        return int(devices)
    if isinstance(devices, str) and re.fullmatch(r"[\d,\s]+", devices):
        return len([d for d in devices.split(",") if d.strip()])
    raise ConfigError(f"devices={devices!r} is not a device count.", accepted="an int, a list of indices, or 'auto'", hint=_DEVICES_HINT)


def _with_torchelastic_environment(plugins: Any) -> list[Any]:
    from lightning.fabric.plugins.environments import ClusterEnvironment, TorchElasticEnvironment

    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([] if plugins is None else [plugins])
    if not any(isinstance(p, ClusterEnvironment) for p in plugins):
        plugins.append(TorchElasticEnvironment())
    return plugins
