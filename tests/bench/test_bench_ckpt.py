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


def test_back_pressure_is_reported_apart_from_blocking():
    sync = [_run([1.0, 1.0, 1.0], [1.0], [])] * 2
    spaced = {**_run([0.3, 0.1, 0.1], [], [1.0]), "backpressure_s": [0.0, 0.5, 0.0], "written_s": [2.0, 2.0, 0.5],
              "save_interval_s": [1.5, 2.5], "waited_in_save_s": [0.0, 0.0, 0.0], "staging_wait_s": [0.9, 0.0, 0.2]}
    result = summarize({"ddp/sync": sync, "ddp/async": [spaced, spaced]})["ddp"]
    assert result["async_later_blocked_s"] == pytest.approx(0.1) and result["async_later_over_sync_blocked"] == pytest.approx(0.1)
    # the first write (2.0 s) outlasted the 1.5 s before the next save was due, in both runs; the second did not
    assert result["async_saves_due_before_previous_written"] == 2
    assert result["async_backpressure_s"] == pytest.approx(0.25) and result["async_write_s"] == pytest.approx(2.0)
    assert result["async_waited_in_save_s_max"] == 0.0
    assert result["async_later_staging_wait_s"] == pytest.approx(0.1)  # FSDP2's next step, later saves: median of 0.0, 0.2


def test_spacing_defaults_to_waiting_for_the_previous_save():
    assert parser().parse_args(["ckpt"]).spacing == "wait" and parser().parse_args(["ckpt", "--spacing", "none"]).spacing == "none"
