"""StepPlan arithmetic, as arithmetic: each row's expectation is derived by hand in its comment."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flashdist import ConfigError
from flashdist.plan import parse_duration, plan_steps

CASES = [
    # 500 samples per rank → ceil(500/9)=56 batches → ceil(56/3)=19 steps per epoch (the measured run)
    pytest.param(dict(dataset_size=1000, batch_size=9, data_parallel_size=2, accumulate_grad_batches=3, max_epochs=3), 56, (19, 19, 19), id="issue-run"),
    # 56 batches, windows of 5 → 11 full + 1 partial flushed at epoch end = 12
    pytest.param(dict(dataset_size=1000, batch_size=9, data_parallel_size=2, accumulate_grad_batches=5, max_epochs=3), 56, (12, 12, 12), id="partial-window"),
    # drop_last: 500 // 9 = 55 batches → ceil(55/5) = 11
    pytest.param(dict(dataset_size=1000, batch_size=9, data_parallel_size=2, accumulate_grad_batches=5, max_epochs=3, drop_last=True), 55, (11, 11, 11), id="drop-last"),
    # the sampler pads 10 samples to 4 ranks × 3; 3 batches of 1 → ceil(3/2) = 2
    pytest.param(dict(dataset_size=10, batch_size=1, data_parallel_size=4, accumulate_grad_batches=2, max_epochs=2), 3, (2, 2), id="sampler-padding"),
    # 10 batches capped at 7 → ceil(7/2) = 4
    pytest.param(dict(dataset_size=100, batch_size=10, accumulate_grad_batches=2, max_epochs=2, limit_train_batches=7), 7, (4, 4), id="limit-int"),
    # int(10 × 0.55) = 5 batches (Lightning floors) → ceil(5/2) = 3
    pytest.param(dict(dataset_size=100, batch_size=10, accumulate_grad_batches=2, max_epochs=2, limit_train_batches=0.55), 5, (3, 3), id="limit-float"),
    # 10 steps per epoch, max_steps=23 cuts the third epoch at 3
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=5, max_steps=23), 10, (10, 10, 3), id="max-steps-mid-epoch"),
    # no max_epochs: max_steps alone decides
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=-1, max_steps=25), 10, (10, 10, 5), id="max-steps-only"),
    # 64 nodes × 8: ceil(1e7/512) = 19532 samples per rank → ceil(19532/32) = 611 batches → ceil(611/4) = 153
    pytest.param(dict(dataset_size=10_000_000, batch_size=32, data_parallel_size=512, accumulate_grad_batches=4, max_epochs=3), 611, (153, 153, 153), id="multi-node"),
    # a per-rank batch count (custom sampler) instead of a dataset size
    pytest.param(dict(batches_per_rank=17, accumulate_grad_batches=4, max_epochs=2), 17, (5, 5), id="batches-per-rank"),
    # DeepSpeed left alone: windows run across epochs: 56 → 18 r2; 2+56=58 → 19 r1; 1+56=57 → 19 (the engine's measured 56)
    # Lightning's types: the int 1 is one batch per epoch → 1 step in each of 2 epochs ...
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=2, limit_train_batches=1), 1, (1, 1), id="limit-int-1-is-one-batch"),
    # ... the float 1.0 is all 10 batches
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=2, limit_train_batches=1.0), 10, (10, 10), id="limit-float-1.0-is-all"),
    # a whole float above 1 is Lightning's int: 2.0 → 2 batches
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=2, limit_train_batches=2.0), 2, (2, 2), id="limit-float-2.0-is-two"),
    # fast_dev_run=True: one batch, one epoch, one step, whatever max_epochs/limit say
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=5, limit_train_batches=0.5, fast_dev_run=True), 1, (1,), id="fast-dev-run-true"),
    # fast_dev_run=4: 4 batches in one epoch, max_steps=4 → 4 steps
    pytest.param(dict(dataset_size=100, batch_size=10, max_epochs=5, fast_dev_run=4), 4, (4,), id="fast-dev-run-4"),
    # fast_dev_run=5 with accumulation 2: 5 batches → 2 full windows + 1 flushed at the epoch end = 3
    pytest.param(dict(dataset_size=100, batch_size=10, accumulate_grad_batches=2, fast_dev_run=5), 5, (3,), id="fast-dev-run-accumulated"),
    # fast_dev_run=20 on a 10-batch loader: the loader runs out first → 10 steps
    pytest.param(dict(dataset_size=100, batch_size=10, fast_dev_run=20), 10, (10,), id="fast-dev-run-longer-than-data"),
]


@pytest.mark.parametrize(("inputs", "micro_batches", "steps_per_epoch"), CASES)
def test_plan_table(inputs, micro_batches, steps_per_epoch):
    plan = plan_steps(**inputs)
    assert plan.fast_dev_run == int(inputs.get("fast_dev_run", 0))
    assert plan.micro_batches_per_epoch_per_rank == micro_batches
    assert plan.optimizer_steps_per_epoch == steps_per_epoch
    assert plan.planned_total_steps == sum(steps_per_epoch)


def test_iterable_without_length_needs_max_steps():
    assert plan_steps(max_steps=50).planned_total_steps == 50
    with pytest.raises(ConfigError, match=r"no length.*HINT: set Trainer\(max_steps=N\)"):
        plan_steps(max_epochs=3)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        # 3 samples over 2 ranks → 2 per rank, batch 4 with drop_last → 0 batches
        (dict(dataset_size=3, batch_size=4, data_parallel_size=2, drop_last=True, max_epochs=1), r"each rank would get 0 training batches \(3 samples over 2"),
        (dict(dataset_size=0, batch_size=4, max_epochs=1), r"0 training batches"),
        (dict(dataset_size=100, batch_size=10, limit_train_batches=0.05, max_epochs=1), r"0 training batches"),
        (dict(dataset_size=100, batch_size=0, max_epochs=1), r"batch_size=0 must be a positive int"),
        (dict(dataset_size=100, batch_size=10, accumulate_grad_batches=0, max_epochs=1), r"accumulate_grad_batches=0"),
        (dict(dataset_size=100, batch_size=10, max_steps=0), r"max_steps=0"),
        (dict(dataset_size=100, batch_size=10, limit_train_batches=1.5), r"limit_train_batches=1.5 is a float above 1.0"),
        (dict(dataset_size=100, batch_size=10, limit_train_batches=float("nan")), r"limit_train_batches=nan is not a non-negative"),
        (dict(dataset_size=100, batch_size=10, limit_train_batches=0), r"limit_train_batches=0 trains on no batch.*trainer.validate"),
        (dict(dataset_size=100, batch_size=10, fast_dev_run=-1), r"fast_dev_run=-1 must be"),
    ],
)
def test_invalid_plans_are_refused(inputs, match):
    with pytest.raises(ConfigError, match=match):
        plan_steps(**inputs)


WARMUP = [
    (0.1, 20),  # 10 % of 200
    (0.001, 1),  # ceil(0.2): a fraction > 0 never rounds to 0
    (0.0, 0),
    (7, 7),
    ("7", 7),
    ("500ba", 500),  # steps; whether it fits the total is the scheduler's check
    ("0.25dur", 50),
    ("1ep", 100),
    ("0.5ep", 50),
    ("1.5ep", 150),
]


@pytest.mark.parametrize(("value", "steps"), WARMUP)
def test_duration_units(value, steps):
    plan = plan_steps(dataset_size=1000, batch_size=10, max_epochs=2)  # 100 steps per epoch, 200 in all
    assert plan.resolve_steps(value) == steps


@pytest.mark.parametrize(("value", "match"), [("3ep", "longer than the 2 epoch"), ("1.5", r"float outside|not a duration"), (-1, "negative"), ("1.5dur", "fraction"), ("2.5ba", "whole number"), (True, "bool")])
def test_bad_durations(value, match):
    plan = plan_steps(dataset_size=1000, batch_size=10, max_epochs=2)
    with pytest.raises(ConfigError, match=match):
        plan.resolve_steps(value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flashdist.cli.main", "plan", *args], capture_output=True, text=True, timeout=60)


def test_flashdist_plan_prints_the_plan_for_a_large_cluster_without_importing_torch():
    args = ["--dataset-size", "10000000", "--batch-size", "32", "--num-nodes", "64", "--devices", "8", "--accumulate-grad-batches", "4", "--max-epochs", "3", "--warmup", "0.05", "--json"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["world_size"], report["data_parallel_size"], report["planned_total_steps"], report["planned_warmup_steps"]) == (512, 512, 459, 23)
    probe = subprocess.run([sys.executable, "-c", "import sys, flashdist.cli.plan; print('torch' in sys.modules, 'lightning' in sys.modules)"], capture_output=True, text=True)
    assert probe.stdout.split() == ["False", "False"]


def test_flashdist_plan_refuses_warmup_over_total_and_draws_the_curve(tmp_path):
    assert "not less than the" in _cli("--dataset-size", "10", "--batch-size", "5", "--max-epochs", "1", "--warmup", "5").stderr
    png = tmp_path / "lr.png"
    proc = _cli("--dataset-size", "100", "--batch-size", "10", "--max-epochs", "1", "--warmup", "0.2", "--plot", str(png), "--lr-scheduler", "linear_schedule_with_warmup", "--learning-rate", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---- token budgets (packed language-model data) ----------------------------------------------
# (samples, batch, ranks, accumulation, seq_length, duration) → steps; tokens per step = batch × ranks × accumulation × seq.
TOKEN_DURATIONS = [
    (1000, 4, 2, 1, 128, "1024tok", 1),  # exactly one step of 8 × 128
    (1000, 4, 2, 1, 128, "1025tok", 2),  # rounds up, as fractions do
    (1000, 4, 2, 2, 128, "2048tok", 1),  # accumulation doubles the tokens per step
    (100_000, 4, 16, 1, 2048, "2e8tok", 1526),  # ceil(2e8 / 131072)
    (1000, 4, 2, 1, 128, "500000tok", 489),
]


@pytest.mark.parametrize(("samples", "batch", "ranks", "accumulate", "seq", "duration", "steps"), TOKEN_DURATIONS)
def test_token_durations_are_whole_steps_of_global_batch_times_seq_length(samples, batch, ranks, accumulate, seq, duration, steps):
    plan = plan_steps(dataset_size=samples, batch_size=batch, data_parallel_size=ranks, accumulate_grad_batches=accumulate,
                      max_epochs=20, drop_last=True, tokens_per_sample=seq)
    assert plan.tokens_per_step == batch * ranks * accumulate * seq
    assert plan.resolve_steps(duration) == steps


@pytest.mark.parametrize(("max_tokens", "steps"), [(8 * 128 * 10, 10), (8 * 128 * 10 + 1, 11), (8 * 128 * 200, 200)])
def test_max_tokens_is_a_step_budget_rounded_up_across_epochs(max_tokens, steps):
    # 1000 samples / 2 ranks / batch 4, drop_last → 125 steps per epoch
    plan = plan_steps(dataset_size=1000, batch_size=4, data_parallel_size=2, drop_last=True, tokens_per_sample=128, max_tokens=max_tokens)
    assert plan.planned_total_steps == plan.max_steps == steps
    assert plan.optimizer_steps_per_epoch == ((125,) * (steps // 125) + ((steps % 125,) if steps % 125 else ()))
    assert plan.planned_total_tokens == steps * 8 * 128 >= max_tokens


def test_token_budgets_need_packed_data_and_one_budget():
    plan = plan_steps(dataset_size=1000, batch_size=4, max_epochs=1)
    with pytest.raises(ConfigError, match="token count.*need packed data"):
        plan.resolve_steps("1000tok")
    with pytest.raises(ConfigError, match="token count"):
        plan_steps(dataset_size=1000, batch_size=4, max_tokens=1000)
    with pytest.raises(ConfigError, match="both given"):
        plan_steps(dataset_size=1000, batch_size=4, tokens_per_sample=8, max_tokens=1000, max_steps=5)
    for bad in ("1.5tok", "0tok", "1e3", "2e6ba"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_flashdist_plan_prints_tokens_per_step_and_in_total():
    from flashdist.cli.plan import plan_report

    report = plan_report(dataset_size=100_000, batch_size=4, num_nodes=2, devices=8, seq_length=2048, max_tokens=2_000_000_000,
                         warmup="2e8tok", drop_last=True)
    assert report["tokens_per_step"] == 64 * 2048
    assert report["planned_total_steps"] == 15259 == -(-2_000_000_000 // (64 * 2048))
    assert report["planned_total_tokens"] == 15259 * 64 * 2048
    assert report["planned_warmup_steps"] == 1526


# ---- Lightning's debug settings in `flashdist plan` -----------------------------------------------
# 200 samples, batch 8, 2 devices → 13 batches per rank per epoch, 3 epochs: 39 steps in a real run.
DEBUG_RUNS = [
    pytest.param(["--fast-dev-run"], 1, [1], id="fast-dev-run"),  # alone: Lightning's fast_dev_run=True
    pytest.param(["--fast-dev-run", "3"], 3, [3], id="fast-dev-run-3"),
    pytest.param(["--limit-train-batches", "1"], 3, [1, 1, 1], id="limit-1-is-one-batch"),
    pytest.param(["--limit-train-batches", "1.0"], 39, [13, 13, 13], id="limit-1.0-is-all"),
]


@pytest.mark.parametrize(("flags", "steps", "per_epoch"), DEBUG_RUNS)
def test_flashdist_plan_shows_what_a_lightning_debug_run_plans(flags, steps, per_epoch):
    proc = _cli("--dataset-size", "200", "--batch-size", "8", "--devices", "2", "--max-epochs", "3", *flags, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["planned_total_steps"], report["optimizer_steps_per_epoch"]) == (steps, per_epoch)
    assert report["fast_dev_run"] == (int(flags[1]) if flags[1:] and flags[0] == "--fast-dev-run" else 1 if flags == ["--fast-dev-run"] else 0)


def test_flashdist_plan_reads_fast_dev_run_from_a_config_and_cuts_its_warmup_as_a_fit_does(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("trainer: {devices: 2, max_epochs: 3, fast_dev_run: true}\n"
                      "model: {init_args: {lr_scheduler: [linear_schedule_with_warmup, {num_warmup_steps: 500}]}}\n"
                      "data: {init_args: {num_samples: 200, batch_size: 8}}\n")
    proc = _cli("--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "fast_dev_run                  1 batch(es) in 1 epoch" in proc.stdout
    assert "total optimizer steps         1" in proc.stdout
    # A fit warns and uses a warmup of the run's length for the smoke run; the plan says the same.
    assert "--warmup=500 is 500 steps, not less than the 1 planned; fast_dev_run=1: a fit uses 1" in proc.stderr
    assert "not less than the 39 planned" in _cli("--config", str(config), "--fast-dev-run", "false").stderr  # a real run: refused
    assert _cli("--config", str(config), "--fast-dev-run", "x").returncode == 2
