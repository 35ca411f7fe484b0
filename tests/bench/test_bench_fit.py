"""`flashdist bench fit` end to end on a tiny fit, and its paired statistics as arithmetic."""

from __future__ import annotations

import json

import pytest

from flashdist.bench import fit
from flashdist.bench.fit_worker import VARIANTS
from flashdist.cli.main import main


def _fits(values_by_variant):
    return [
        {"variant": v, "round": r, "median_us": x, "cpu_median_us": x / 2, "fit_wall_s": 1.0, "steps_taken": 10}
        for v, xs in values_by_variant.items()
        for r, x in enumerate(xs)
    ]


def test_summary_pairs_by_round():
    base = {"lightning:none": [100.0, 200.0, 300.0], "flashdist:none": [101.0, 202.0, 303.0]}
    values = {**base, "lightning:hf": [110.0, 210.0, 310.0], "lightning:fast": [100.5, 200.5, 300.5],
              "flashdist:hf": [111.0, 212.0, 313.0], "flashdist:fast": [101.5, 202.5, 303.5]}
    config = {"devices": 1, "strategy": "auto", "variants": list(VARIANTS)}
    summary = fit.summarize(config, _fits(values))
    # round-to-round drift (100 -> 300) cancels in the paired comparisons
    assert summary["scheduler_overhead_us"]["lightning:hf"]["median"] == pytest.approx(10.0)
    assert summary["scheduler_overhead_us"]["flashdist:fast"]["per_round"] == pytest.approx([0.5, 0.5, 0.5])
    assert summary["harness_ratio"]["none"]["median"] == pytest.approx(1.01)
    assert summary["harness_ratio"]["none"]["cpu_median"] == pytest.approx(1.01)
    # all schedules pooled per round: (101 + 111 + 101.5) / (100 + 110 + 100.5) in round 0
    assert summary["harness_ratio"]["all"]["per_round"][0] == pytest.approx(313.5 / 310.5)
    assert summary["variants"]["flashdist:hf"]["us_per_step"] == 212.0
    low, high = summary["variants"]["flashdist:hf"]["ci95"]
    assert 111.0 <= low <= 212.0 <= high <= 313.0


def test_cli_runs_real_fits_and_writes_json_and_png(tmp_path, capsys):
    out_json, out_png = tmp_path / "fit.json", tmp_path / "fit.png"
    code = main(["bench", "fit", "--devices", "1", "--steps", "12", "--warmup-steps", "3", "--repeats", "1",
                 "--warmup-rounds", "0", "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "flashdist / lightning per step" in printed and "method:" in printed
    result = json.loads(out_json.read_text())
    assert set(result) == {"method", "environment", "configs"}
    (config,) = result["configs"]
    assert config["devices"] == 1 and set(config["variants"]) == set(VARIANTS)
    for stats in config["variants"].values():
        assert stats["us_per_step"] > 0 and len(stats["per_fit_median_us"]) == 1
        assert stats["ci95"][0] <= stats["us_per_step"] <= stats["ci95"][1]
        assert stats["steps_per_fit"] == 3 + 12 + 1
    assert set(config["harness_ratio"]) == {"none", "hf", "fast", "all"}
    assert all(stats["median"] > 0 for stats in config["harness_ratio"].values())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.multiprocess
def test_two_processes_under_torchrun():
    result = fit.run(devices=(2,), steps=8, warmup_steps=2, repeats=1, warmup_rounds=0)
    (config,) = result["configs"]
    assert config["devices"] == 2 and config["strategy"] == "ddp"
    assert all(stats["steps_per_fit"] == 2 + 8 + 1 for stats in config["variants"].values())


def test_each_round_runs_every_variant_once_with_compared_pairs_adjacent():
    import random

    from flashdist.bench.fit_worker import round_order

    rng = random.Random(3)
    orders = [round_order(list(VARIANTS), rng) for _ in range(20)]
    for order in orders:
        assert sorted(order) == sorted(VARIANTS)
        for first, second in zip(order[::2], order[1::2]):
            assert first.split(":")[1] == second.split(":")[1] and first != second
    assert len({tuple(order) for order in orders}) > 1, "the order is shuffled from round to round"
