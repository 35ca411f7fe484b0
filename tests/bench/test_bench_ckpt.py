"""``flashdist bench ckpt``'s arithmetic (the measurement itself is a benchmark, never a test)."""

from __future__ import annotations

import pytest

from flashdist.bench.ckpt import summarize
from flashdist.cli.bench import parser


def _run(blocked: list[float], idle: list[float], in_flight: list[float]) -> dict:
    return {"blocked_s": blocked, "step_idle_s": idle, "step_in_flight_s": in_flight}


def test_the_first_async_save_is_reported_apart_and_the_ratio_pairs_later_saves_with_their_round():
    raw = {
        "ddp/sync": [_run([2.0, 2.0, 4.0], [1.0], []), _run([1.0, 1.0, 1.0], [3.0], [])],  # all six: median 1.5
        # round 0: later saves 0.1, 0.3 (median 0.2) over sync median 2.0 → 0.1; round 1: 0.1 / 1.0 → 0.1
        "ddp/async": [_run([0.5, 0.1, 0.3], [], [2.0, 4.0]), _run([0.7, 0.1, 0.1], [1.0], [3.0])],
    }
    result = summarize(raw)["ddp"]
    assert result["async_first_blocked_s"] == pytest.approx(0.6)  # median of 0.5 and 0.7
    assert result["async_later_blocked_s"] == pytest.approx(0.1)  # median of 0.1, 0.3, 0.1, 0.1
    assert result["async_later_over_sync_blocked"] == pytest.approx(0.1)
    assert result["sync_blocked_s"] == pytest.approx(1.5) and result["async_step_in_flight_s"] == pytest.approx(3.0)
    assert (result["saves_per_mode"], result["steps_in_flight"]) == (6, 3)


def test_bench_ckpt_is_a_subcommand_with_its_defaults():
    args = parser().parse_args(["ckpt"])
    assert (args.model_mb, args.strategies) == (256, ["ddp", "fsdp"])
