"""`flashdist bench schedulers` end to end on tiny sizes: well-formed JSON and PNG, no timing claims."""

from __future__ import annotations

import json

import pytest

from flashdist.bench import schedulers
from flashdist.cli.main import main
from flashdist.optim import LR_SCHEDULERS

RESULT_KEYS = {"scheduler", "implementation", "groups", "us_per_step", "spread", "ratio_to_direct", "ratio_ci95"}
SAME_SCHEDULE_KEYS = {"same_schedule_direct_us_per_step", "ratio_to_same_schedule_direct", "ratio_to_same_schedule_direct_ci95"}
IMPLEMENTATIONS = {"flashdist", "transformers", "torch", "deepspeed"}


def test_cli_writes_table_json_and_png(tmp_path, capsys):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    names = "steplr,linear_schedule_with_warmup,hf:linear_schedule_with_warmup,reducelronplateau"
    code = main(["bench", "schedulers", "--groups", "1,3", "--steps", "20", "--repeats", "3", "--warmup-steps", "5",
                 "--only", names, "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "direct assignment" in printed and "method:" in printed and "skipped reducelronplateau" in printed

    result = json.loads(out_json.read_text())
    assert {"method", "environment", "baseline_us_per_step", "results"} <= set(result)
    assert set(result["baseline_us_per_step"]) == {"1", "3"}
    assert all(v > 0 for v in result["baseline_us_per_step"].values())
    assert len(result["results"]) == 3 * 2
    for row in result["results"]:
        same_schedule = {k for k in row if "same_schedule" in k}
        assert set(row) - same_schedule == RESULT_KEYS
        # only the fast path has a same-schedule baseline, and it has all three fields
        assert same_schedule == (SAME_SCHEDULE_KEYS if row["implementation"] == "flashdist" else set())
        assert row["implementation"] in IMPLEMENTATIONS and row["groups"] in (1, 3)
        assert row["us_per_step"] > 0 and row["spread"] >= 0
        low, high = row["ratio_ci95"]
        assert 0 < low <= row["ratio_to_direct"] <= high
    by_name = {r["scheduler"]: r["implementation"] for r in result["results"]}
    expected = {"steplr": "torch", "linear_schedule_with_warmup": "flashdist", "hf:linear_schedule_with_warmup": "transformers"}
    assert by_name == expected
    assert result["skipped"] == [{"scheduler": "reducelronplateau", "reason": schedulers.SKIP_REASONS["reducelronplateau"]}]
    assert "median" in result["method"] and "shuffled order" in result["method"]
    assert "fast path ÷ direct assignment of the same schedule" in printed
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_registered_scheduler_is_timed_or_skipped_with_a_reason():
    result = schedulers.run(groups=(2,), steps=2, repeats=1, warmup_steps=1)
    timed = {row["scheduler"] for row in result["results"]}
    skipped = {row["scheduler"]: row["reason"] for row in result["skipped"]}
    # Every registry name; recipes on Task classes other test modules imported come on top.
    assert set(LR_SCHEDULERS.names()) <= timed | set(skipped)
    assert not [name for name, reason in skipped.items() if reason.startswith("failed to build")], skipped
    implementations = {row["implementation"] for row in result["results"]}
    assert {"flashdist", "transformers", "torch"} <= implementations


def test_bad_group_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "schedulers", "--groups", "1,x"])
    assert exit_info.value.code == 2
    assert "comma-separated list of ints" in capsys.readouterr().err


def test_same_schedule_baseline_writes_the_same_lrs_as_the_fast_path():
    from flashdist.optim import build_lr_scheduler

    fast_optimizer = schedulers.make_optimizer(3)
    scheduler, _ = build_lr_scheduler(fast_optimizer, ("cosine_schedule_with_warmup", {"num_warmup_steps": 5}), 50)
    direct_optimizer = schedulers.make_optimizer(3)
    direct_step = schedulers.direct_assignment_of(scheduler.schedule.multiplier_fn(), direct_optimizer)
    for _ in range(20):
        scheduler.step()
        direct_step()
        assert [g["lr"] for g in direct_optimizer.param_groups] == [g["lr"] for g in fast_optimizer.param_groups]


def test_cli_times_the_specs_a_user_brings(tmp_path, capsys):
    out_json = tmp_path / "user.json"
    specs = ["tests.bench.user_schedules:warmup_then_inverse_sqrt", "[cosine_schedule_with_warmup, {num_warmup_steps: 0.1}]",
             "halve_every_100", "hf:linear_schedule_with_warmup"]
    argv = ["bench", "schedulers", "--groups", "1,2", "--steps", "10", "--repeats", "2", "--warmup-steps", "2",
            "--import", "tests.bench.user_schedules", "--json", str(out_json), "--plot", "none"]
    code = main([*argv, *(arg for spec in specs for arg in ("--scheduler", spec))])
    assert code == 0
    printed = capsys.readouterr().out
    assert "direct assignment (baseline)" in printed and "warmup_then_inverse_sqrt" in printed
    result = json.loads(out_json.read_text())
    rows = {(row["scheduler"], row["groups"]): row for row in result["results"]}
    assert set(rows) == {(spec, groups) for spec in specs for groups in (1, 2)}, "one row per spec and group count, nothing else"
    implementations = {spec: rows[spec, 1]["implementation"] for spec in specs}
    assert implementations == {specs[0]: "torch", specs[1]: "flashdist", specs[2]: "torch", specs[3]: "transformers"}
    for row in rows.values():
        low, high = row["ratio_ci95"]
        assert 0 < low <= row["ratio_to_direct"] <= high
    # the fast path (the YAML spec) is also compared with its own schedule written by hand
    assert "ratio_to_same_schedule_direct" in rows[specs[1], 2]
    assert "ratio_to_same_schedule_direct" not in rows[specs[0], 2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.bench.user_schedules:no_such_schedule", "has no attribute"),
        ("[cosine_schedule_with_warmup, {num_warmup_step: 0.1}]", "did you mean 'num_warmup_steps'"),
        ("[steplr, {step_size: 10}", "not valid YAML"),
        ("cosine_shedule_with_warmup", "did you mean"),
        ("reducelronplateau", "monitored metric"),
    ],
)
def test_a_bad_user_spec_is_refused_before_anything_is_timed(spec, message, capsys):
    code = main(["bench", "schedulers", "--groups", "1", "--steps", "5", "--repeats", "1", "--scheduler", spec, "--plot", "none"])
    captured = capsys.readouterr()
    assert code == 2 and message in captured.err
    assert "round 1/1" not in captured.out, "refused before the first timed round"
