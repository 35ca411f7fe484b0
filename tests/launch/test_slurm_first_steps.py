"""SLURM's first steps on a small cluster, without a cluster: the sbatch script sbatch itself
would accept (default partition, a CPU job), and a fresh machine's `local-cluster.sh start`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.launch.launchers import describe, run_cli

REPO = Path(__file__).resolve().parents[2]


def test_a_script_without_partition_or_gpus_is_a_cpu_job_on_the_default_partition(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("trainer: {max_epochs: 1}\n")
    out = tmp_path / "job.sbatch"
    proc = run_cli(["slurm", "--config", str(config), "--nodes", "1", "--time", "00:10:00", "--script-out", str(out),
                    "--log-dir", str(tmp_path / "logs")], timeout_s=60)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    directives = [line for line in out.read_text().splitlines() if line.startswith("#SBATCH")]
    assert not [d for d in directives if d.startswith(("#SBATCH --partition", "#SBATCH --gpus"))], directives
    assert "#SBATCH --nodes=1" in directives and "#SBATCH --ntasks-per-node=1" in directives
    assert "(1 node(s) x 1 rank(s) = world size 1)" in proc.stdout


def test_local_cluster_start_installs_the_packages_itself_on_a_fresh_machine(tmp_path):
    # A copy of slurm/ whose ensure-packages.sh only records that it ran (installing is apt's
    # job, not this test's); no SLURM binaries on PATH or in the sbin directory.
    slurm = tmp_path / "slurm"
    shutil.copytree(REPO / "slurm", slurm)
    ran = tmp_path / "ensure-packages-ran"
    (slurm / "ensure-packages.sh").write_text(f"#!/usr/bin/env bash\ntouch {ran}\n")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "FLASHDIST_SLURM_SBIN": str(tmp_path / "no-sbin"),
           "FLASHDIST_SLURM_DIR": str(tmp_path / "state"), "HOME": os.environ.get("HOME", "/root")}
    env["PATH"] = ":".join(d for d in env["PATH"].split(":") if not any(Path(d, b).exists() for b in ("munged", "slurmctld", "slurmd")))
    proc = subprocess.run(["bash", str(slurm / "local-cluster.sh"), "start"], capture_output=True, text=True, env=env, timeout=60)
    if os.geteuid() != 0:
        assert "needs root" in proc.stderr
        return
    assert ran.exists(), proc.stdout + proc.stderr
    assert "running slurm/ensure-packages.sh" in proc.stdout
    assert proc.returncode != 0 and "still missing after slurm/ensure-packages.sh" in proc.stderr
