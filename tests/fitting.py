"""Run ``tests/scripts/fit_tiny.py`` as a real multi-process fit and read its ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT = SCRIPTS / "fit_tiny.py"
REPO = Path(__file__).resolve().parents[1]


def run_fit(root: Path, timeout_s: float = 240, expect_ok: bool = True, **config) -> dict:
    """Fit in a subprocess (Lightning launches the other ranks); return summary.json.

    On failure the process's output is in the assertion message.
    """
    config = {"root": str(root), **config}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MASTER_PORT": str(free_port())}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), json.dumps(config)], capture_output=True, text=True, timeout=timeout_s, env=env
    )
    if expect_ok:
        assert proc.returncode == 0, f"fit failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        return json.loads((root / "summary.json").read_text())
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def run_in_one_torchrun(script: str, configs: list[dict], timeout_s: float) -> subprocess.CompletedProcess:
    """Run ``tests/scripts/<script>`` once under torchrun with 2 processes over ``configs`` (a JSON list).

    Many tiny fits in one launch pay the imports and the process start once. Fails the test with the
    launch's output unless every fit succeeded.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
               str(SCRIPTS / script), json.dumps(configs)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, f"fits failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def read_lr_csv(root: Path) -> list[list[float]]:
    lines = (root / "lr.csv").read_text().splitlines()[1:]
    return [[float(v) for v in line.split(",")[1:]] for line in lines]


def free_port() -> int:
    """A TCP port free on localhost now (for MASTER_PORT / --master-port); the tests' one copy."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
