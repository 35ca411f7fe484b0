"""Fixtures for the launch tests: an uninterrupted reference fit and the one-host SLURM cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.launch.launchers import CHECKED_YAML, LOCAL_CLUSTER, SLURM_DIR, describe, fit_command, run_cli


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted `flashdist launch --nproc-per-node 2 -- flashdist fit --config run.yaml` (its root).

    Its data records each process that ran the pre-launch checks (checked.yaml: the same data).
    """
    root = tmp_path_factory.mktemp("reference")
    proc = run_cli(["launch", "--nproc-per-node", "2", "--rdzv-timeout", "60", "--", *fit_command(root, "--config", str(CHECKED_YAML))],
                   timeout_s=240)
    assert proc.returncode == 0, describe(proc)
    return root


# ---- SLURM ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-host cluster from slurm/local-cluster.sh; started here (and stopped after) if not already up."""
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch") if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
    if missing:
        pytest.skip(
            f"SLURM TESTS DID NOT RUN: {', '.join(missing)} not installed and slurm/ensure-packages.sh could not install them "
            "(needs root + apt). Run `bash slurm/ensure-packages.sh` and see its warning."
        )
    if os.geteuid() != 0:
        pytest.skip("SLURM TESTS DID NOT RUN: the local cluster's daemons need root.")
    env = {**os.environ, "FLASHDIST_SLURM_DIR": str(SLURM_DIR)}
    already_up = subprocess.run(["bash", str(LOCAL_CLUSTER), "status"], capture_output=True, env=env).returncode == 0
    start = subprocess.run(["bash", str(LOCAL_CLUSTER), "start"], capture_output=True, text=True, env=env, timeout=120)
    assert start.returncode == 0, f"slurm/local-cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
    try:
        yield SLURM_DIR
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not already_up:
            subprocess.run(["bash", str(LOCAL_CLUSTER), "stop"], capture_output=True, env=env, timeout=60)


