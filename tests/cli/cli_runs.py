"""Run ``flashdist fit`` on a config from ``configs/`` as real processes, with its output paths in a temp dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.fitting import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# Shortens every config the same way: few steps, little validation, no sanity check.
SHORT = ["--trainer.max_steps=4", "--trainer.limit_val_batches=2", "--trainer.num_sanity_val_steps=0"]


def config_copy(name: str, tmp_path: Path, replace: dict[str, str] | None = None) -> Path:
    """``configs/<name>`` with its ``runs/<stem>`` output paths moved under ``tmp_path``."""
    text = (CONFIGS / name).read_text().replace(f"runs/{Path(name).stem}", str(tmp_path / "run"))
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {name}"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def flashdist_fit(config: Path, *overrides: str, env: dict[str, str] | None = None, timeout_s: float = 240) -> subprocess.Popen:
    """Start ``python -m flashdist.cli.main fit --config ...`` (Lightning re-executes it for the other ranks)."""
    command = [sys.executable, "-m", "flashdist.cli.main", "fit", "--config", str(config), *overrides]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), **(env or {})}
    full_env.pop("LOCAL_RANK", None)
    return subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 240) -> tuple[str, str]:
    stdout, stderr = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, f"flashdist fit failed ({proc.returncode}):\n{stdout[-4000:]}\n{stderr[-6000:]}"
    return stdout, stderr


# How a warning reaches the console: Python's warnings module ("UserWarning: ...", Lightning's
# rank_zero_warn too), transformers' logger through flashdist's console ("[transformers] ..."),
# and a deprecation notice in any other form.
_WARNING_LINE = re.compile(r"Warning\b|^\[transformers\]|deprecat", re.IGNORECASE | re.MULTILINE)


def warning_lines(stdout: str, stderr: str) -> list[str]:
    """The console lines of a run that warn: a shipped config run as shipped should print none."""
    return [line for line in (stdout + stderr).splitlines() if _WARNING_LINE.search(line)]


def read_summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "summary.json").read_text())
