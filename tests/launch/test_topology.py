"""Reading the launcher's topology, and refusing a config that disagrees: arithmetic on env tables."""

from __future__ import annotations

import pytest

from flashdist.launching import topology
from flashdist.launching.topology import LaunchTopology, detect_launch_topology
from flashdist.errors import ConfigError

TORCHRUN = {"TORCHELASTIC_RUN_ID": "r", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "2"}
SLURM = {"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "flashdist"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        (TORCHRUN, ("torchrun", 2, 2, 4)),
        ({"TORCHELASTIC_RUN_ID": "r", "LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "2"}, ("torchrun", 1, 2, 2)),
        (SLURM, ("slurm", 2, 2, 4)),
        ({"SLURM_NTASKS": "6", "SLURM_NNODES": "3", "SLURM_TASKS_PER_NODE": "2(x3)"}, ("slurm", 2, 3, 6)),
        ({"SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_JOB_NAME": "interactive"}, None),  # Lightning's opt-out
        ({**SLURM, **TORCHRUN}, ("torchrun", 2, 2, 4)),  # torchrun inside an srun task made the processes
    ],
)
def test_detect(env, expected):
    found = detect_launch_topology(env)
    assert (None if found is None else (found.launcher, found.devices_per_node, found.num_nodes, found.world_size)) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLURM_NTASKS": "3", "SLURM_NNODES": "2", "SLURM_TASKS_PER_NODE": "2,1"}, "uneven topology"),
        ({"TORCHELASTIC_RUN_ID": "r", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "3"}, "uneven topology"),
        ({"TORCHELASTIC_RUN_ID": "r", "LOCAL_WORLD_SIZE": "two", "WORLD_SIZE": "2"}, "expected an integer"),
    ],
)
def test_detect_refuses_what_flashdist_cannot_plan(env, message):
    with pytest.raises(ConfigError, match=message):
        detect_launch_topology(env)


TWO_BY_TWO = LaunchTopology("torchrun", devices_per_node=2, num_nodes=2, world_size=4, evidence="LOCAL_WORLD_SIZE=2, WORLD_SIZE=4")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (2, 2)),
        ({"devices": "auto", "num_nodes": "auto"}, (2, 2)),
        ({"devices": -1, "num_nodes": None}, (2, 2)),
        ({"devices": 2, "num_nodes": 2}, (2, 2)),
        ({"devices": [0, 1]}, ([0, 1], 2)),
        ({"devices": "0,1"}, ("0,1", 2)),
    ],
)
def test_config_left_to_the_launcher_or_agreeing_is_kept(monkeypatch, kwargs, expected):
    monkeypatch.setattr(topology, "detect_launch_topology", lambda environ=None: TWO_BY_TWO)
    resolved = topology.apply_launch_topology(kwargs)
    assert (resolved["devices"], resolved["num_nodes"]) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 1}, r"Trainer\(devices=1\) asks for 1 process\(es\) per node, but torchrun started 2 per node"),
        ({"devices": [0, 1, 2]}, r"asks for 3 process\(es\) per node"),
        ({"num_nodes": 1}, r"Trainer\(num_nodes=1\) but torchrun started 2 node\(s\)"),
        ({"devices": "gpu"}, "is not a device count"),
    ],
)
def test_config_that_disagrees_with_the_launcher_is_refused(monkeypatch, kwargs, message):
    monkeypatch.setattr(topology, "detect_launch_topology", lambda environ=None: TWO_BY_TWO)
    with pytest.raises(ConfigError, match=message) as error:
        topology.apply_launch_topology(kwargs)
    assert "HINT:" in str(error.value)


def test_without_a_launcher_auto_nodes_is_one_node(monkeypatch):
    monkeypatch.setattr(topology, "detect_launch_topology", lambda environ=None: None)
    assert topology.apply_launch_topology({"devices": 2, "num_nodes": "auto"}) == {"devices": 2, "num_nodes": 1}


def test_several_nodes_without_a_launcher_are_refused_instead_of_waiting(monkeypatch):
    monkeypatch.setattr(topology, "detect_launch_topology", lambda environ=None: None)
    monkeypatch.delenv("NODE_RANK", raising=False)
    with pytest.raises(ConfigError, match=r"Trainer\(num_nodes=2\) but no launcher started this process") as error:
        topology.apply_launch_topology({"num_nodes": 2})
    assert "flashdist launch" in str(error.value) and "HINT:" in str(error.value)
    monkeypatch.setenv("NODE_RANK", "1")  # Lightning's manual multi-node launch
    assert topology.apply_launch_topology({"num_nodes": 2})["num_nodes"] == 2


def test_torchrun_inside_srun_gets_torchrun_ranks_not_slurm_tasks(monkeypatch):
    # Lightning would pick SLURMEnvironment (one rank per SLURM task); torchrun made these processes.
    from lightning.fabric.plugins.environments import TorchElasticEnvironment

    for name, value in {**SLURM, **TORCHRUN}.items():
        monkeypatch.setenv(name, value)
    resolved = topology.apply_launch_topology({"devices": "auto"})
    assert (resolved["devices"], resolved["num_nodes"]) == (2, 2)
    assert [type(p) for p in resolved["plugins"]] == [TorchElasticEnvironment]
