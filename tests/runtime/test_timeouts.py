"""Nothing in a failing run hangs: a dead or stuck rank ends the fit, with a message naming the rank."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.runtime import harness

pytestmark = pytest.mark.multiprocess


def _time_of_line(proc, marker: str, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return time.monotonic()
        assert time.monotonic() < deadline, "".join(lines)[-4000:]
    raise AssertionError(f"{marker!r} never printed:\n{''.join(lines)[-4000:]}")


def test_rank_killed_while_the_other_waits_in_a_collective_ends_the_fit_promptly(tmp_path: Path):
    proc = harness.start(tmp_path, die_at_step={"step": 3, "rank": 1, "delay_s": 2}, collective_timeout_s=120)
    died_at = _time_of_line(proc, "rank 1 dies at step 3", timeout_s=150)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode not in (0, None)
    assert time.monotonic() - died_at < 60, "far below the 120 s process-group timeout: the peer's death is noticed"
    assert "flashdist: rank 0 of 2 stopped: RuntimeError" in output and "Connection closed by peer" in output


def test_stuck_rank_ends_within_the_configured_collective_timeout(tmp_path: Path):
    timeout_s = 20
    proc = harness.start(tmp_path, hang_at_step={"step": 3, "rank": 1}, collective_timeout_s=timeout_s)
    stuck_at = _time_of_line(proc, "rank 1 hangs at step 3", timeout_s=150)
    output = proc.communicate(timeout=timeout_s + 90)[0]  # returns only once rank 1 closed the pipe too
    waited = time.monotonic() - stuck_at
    assert proc.returncode not in (0, None)
    assert timeout_s - 1 <= waited < timeout_s + 60, waited
    assert "flashdist: rank 0 of 2 stopped:" in output
    # gloo words it "Timed out ..." for a blocking collective and "Application timeout caused
    # pair closure" for the non-blocking stop vote a rank may be waiting on.
    assert any(text in output for text in ("Timed out", "timed out", "Application timeout")), output[-2000:]
