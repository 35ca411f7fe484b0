"""Run ``fit_reliable.py`` as real processes (Lightning's launcher or torchrun) and read what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.fitting import free_port

SCRIPT = Path(__file__).parent / "fit_reliable.py"
REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _env(attempt: int = 0) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MASTER_PORT": str(free_port()), "FIT_ATTEMPT": str(attempt)}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT", "SLURM_JOB_ID", "SLURM_NTASKS"):
        env.pop(name, None)
    return env


def command(root: Path, config: dict) -> list[str]:
    return [sys.executable, str(SCRIPT), json.dumps({"root": str(root), **config})]


# gloo's TCP mesh can fail to form on an overloaded shared machine ("connectFullMesh failed").
# That is the environment, not the behaviour under test: such a fit, which never reached its
# first step, is started again once, on a fresh port.
_RENDEZVOUS_FAILURES = ("connectFullMesh failed", "waiting for clients")


def fit(root: Path, attempt: int = 0, timeout_s: float = 180, **config) -> subprocess.CompletedProcess:
    """One fit to its end (or failure); output captured."""
    for retry in (False, True):
        proc = subprocess.run(command(root, config), capture_output=True, text=True, timeout=timeout_s, env=_env(attempt), cwd=REPO)
        never_started = "flashdist plan" not in proc.stdout + proc.stderr
        if retry or proc.returncode == 0 or not never_started or not any(f in proc.stderr for f in _RENDEZVOUS_FAILURES):
            return proc
    return proc


def fit_ok(root: Path, **config) -> dict:
    proc = fit(root, **config)
    assert proc.returncode == 0, f"fit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return summary(root)


def start(root: Path, attempt: int = 0, **config) -> subprocess.Popen:
    return subprocess.Popen(command(root, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(attempt), cwd=REPO)


def torchrun(root: Path, nproc: int, max_restarts: int, timeout_s: float = 240, **config) -> subprocess.CompletedProcess:
    cmd = [
        str(TORCHRUN), "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--monitor-interval", "0.5",
        *command(root, config)[1:],
    ]
    # Own session, so a timeout takes torchrun's workers down too instead of orphaning them.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"torchrun still running after {timeout_s} s:\n{stderr[-6000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


FORKED = Path(__file__).parent / "forked_ranks.py"


def forked(workdir: Path, segments: list[dict], timeout_s: float = 900) -> str:
    """Run ``forked_ranks.py`` over ``segments`` (its docstring says what they are); its output, also in workdir/log.txt."""
    spec = workdir / "segments.json"
    spec.write_text(json.dumps(segments))
    # Own session, so a timeout takes the forked ranks down too instead of orphaning them.
    proc = subprocess.Popen([sys.executable, str(FORKED), str(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), cwd=REPO, start_new_session=True)
    try:
        output = proc.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
        raise AssertionError(f"forked_ranks.py still running after {timeout_s} s:\n{output[-6000:]}") from None
    (workdir / "log.txt").write_text(output)
    assert proc.returncode == 0, output[-6000:]
    return output


def wait_for(predicate: Callable[[], bool], timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the fit ended ({proc.returncode}) before the condition held:\n{proc.stdout.read()[-6000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the fit")


def pause_and_signal(proc: subprocess.Popen, root: Path, step: int, signal_it: Callable[[], None], timeout_s: float = 180) -> None:
    """Wait until the fit paused at ``step`` (``pause_at_step``), signal it, then let it go on."""
    wait_for(lambda: (root / f"reached-step-{step}").exists(), timeout_s=timeout_s, proc=proc)
    signal_it()
    (root / "go").write_text("")


def summary(root: Path) -> dict:
    return json.loads((root / "summary.json").read_text())


def lr_rows(root: Path) -> list[tuple[int, float]]:
    lines = (root / "lr.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr")
    return [(int(line.split(",")[0]), float(line.split(",")[1])) for line in lines[1:]]


def lrs(root: Path) -> list[float]:
    rows = lr_rows(root)
    assert [step for step, _ in rows] == list(range(1, len(rows) + 1)), "lr.csv must hold each step once, in order"
    return [lr for _, lr in rows]


def samples(root: Path) -> list[dict]:
    out = []
    for path in sorted(root.glob("samples-rank*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def copy_run(source: Path, target: Path) -> Path:
    """A copy of a run directory (its checkpoints, lr.csv, summary) to resume elsewhere."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("samples-rank*.jsonl"))
    return target


def ckpt(root: Path, pattern: str) -> Path:
    found = sorted((root / "checkpoints").glob(pattern))
    assert len(found) == 1, f"{pattern}: {[p.name for p in (root / 'checkpoints').iterdir()]}"
    return found[0]


def send(proc: subprocess.Popen, signum: int = signal.SIGUSR1) -> None:
    os.kill(proc.pid, signum)
