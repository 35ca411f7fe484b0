"""`flashdist bench startup`'s plumbing: the paired report as arithmetic, its refusals, the first-step detector.

No timing is asserted: the rows below are given, and the detector is checked on which batch it fires.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from flashdist.bench import startup
from flashdist.cli import bench
from flashdist.cli.main import main


def _rows(workload: str, times_by_round: dict[int, dict[str, float]], warmup_round: int | None = 0) -> list[dict]:
    return [{"workload": workload, "side": side, "round": r, "warmup": r == warmup_round, "first_step_s": t, "load_1min": 2.0 + r}
            for r, times in times_by_round.items() for side, t in times.items()]


def test_summary_pairs_each_round_and_leaves_the_warmup_out():
    rows = _rows("llm", {
        0: {"flashdist": 99.0, "lightning": 1.0, "before": 50.0},  # warm-up: in no median, no ratio
        1: {"flashdist": 12.0, "lightning": 10.0, "before": 12.0},
        2: {"flashdist": 9.0, "lightning": 6.0, "before": 8.0},
        3: {"flashdist": 20.0, "lightning": 16.0, "before": 16.0},
    }) + _rows("quickstart", {1: {"lightning": 4.0, "flashdist": 5.0}}, warmup_round=None)
    llm, quickstart = startup.summarize(rows)
    assert (llm["workload"], llm["rounds"], llm["load_1min_range"]) == ("llm", 3, [3.0, 5.0])
    assert llm["first_step_s"] == {"flashdist": 12.0, "lightning": 10.0, "before": 12.0}
    # per round 12/10, 9/6, 20/16: the median of those (1.25), not the ratio of the medians (12/10 = 1.2)
    assert llm["ratios"]["flashdist/lightning"] == {"median": 1.25, "per_round": [1.2, 1.5, 1.25]}
    assert llm["ratios"]["before/lightning"] == {"median": 1.2, "per_round": [1.2, 1.333, 1.0]}
    assert llm["ratios"]["flashdist/before"] == {"median": 1.125, "per_round": [1.0, 1.125, 1.25]}
    assert quickstart["first_step_s"] == {"lightning": 4.0, "flashdist": 5.0}
    assert quickstart["ratios"] == {"flashdist/lightning": {"median": 1.25, "per_round": [1.25]}}  # no before side: no such ratio


def test_a_round_missing_a_side_is_left_out_of_that_ratio_only():
    rows = _rows("lora", {1: {"flashdist": 6.0, "lightning": 4.0}, 2: {"flashdist": 3.0}}, warmup_round=None)
    (lora,) = startup.summarize(rows)
    assert lora["ratios"]["flashdist/lightning"]["per_round"] == [1.5]
    assert lora["first_step_s"] == {"flashdist": 4.5, "lightning": 4.0}


def test_the_printed_table_shows_medians_and_per_round_ratios():
    from rich.console import Console

    console = Console(record=True, width=200)
    startup.print_summary(startup.summarize(_rows("llm", {1: {"flashdist": 12.0, "lightning": 10.0}}, warmup_round=None)), console)
    text = console.export_text()
    assert "ratios (median [per" in text and "flashdist ÷ lightning" in text and "1.20 [1.20]" in text and "12.0" in text and "method:" in text
    console = Console(record=True, width=200)
    startup.print_summary(startup.summarize(_rows("llm", {0: {"flashdist": 12.0, "lightning": 10.0}})), console)
    assert "no reported round" in console.export_text()


@pytest.mark.parametrize("argv, expected", [
    (["--workloads", "quickstrat,lora"], "did you mean 'quickstart'"),
    (["--workloads", "llm,zzz"], "'zzz': no close match"),
    (["--workloads", ","], "names no workload"),
    (["--before", "."], "is not a flashdist checkout"),
])
def test_a_bad_request_is_one_config_error_before_anything_runs(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "startup", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flashdist bench startup: ") and expected in err and "HINT:" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder made, nothing started


def test_the_cli_knows_the_same_workloads_and_writes_under_bench_results():
    assert bench.STARTUP_WORKLOADS == startup.WORKLOADS
    defaults = bench.parser().parse_args(["startup"])
    assert defaults.out == "bench-results" and defaults.json_path is None
    startup.check_request(defaults.workloads, None)  # the defaults are accepted


class _Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _StampsAfterEachBatch(Callback):
    """Runs after FirstStepStamp: which events the stamps file holds at the end of each micro-batch."""

    def __init__(self, path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        events = [json.loads(line)["event"] for line in self.path.read_text().splitlines()]
        self.seen.append((batch_idx, trainer.global_step, events))


def test_the_stamp_fires_once_at_the_first_optimizer_step_not_the_first_batch(tmp_path, monkeypatch):
    stamps = tmp_path / "stamps.jsonl"
    monkeypatch.setenv(startup.STAMPS_ENV, str(stamps))
    recorder = _StampsAfterEachBatch(stamps)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=2, accumulate_grad_batches=2, callbacks=[startup.FirstStepStamp(), recorder],
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)
    trainer.fit(_Tiny(), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2))
    built_and_fit = ["built", "process_start", "fit_start"]
    assert recorder.seen == [
        (0, 0, built_and_fit),  # one micro-batch accumulated: no optimizer step yet
        (1, 1, [*built_and_fit, "first_step"]),
        (2, 1, [*built_and_fit, "first_step"]),
        (3, 2, [*built_and_fit, "first_step"]),  # the second step stamps nothing
    ]
    rows = [json.loads(line) for line in stamps.read_text().splitlines()]
    assert {row["rank"] for row in rows} == {0}
    assert rows[2]["t"] <= rows[3]["t"]  # fit start, then the step: the same clock


def _child(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def test_time_to_first_step_reads_rank_0s_stamp_and_stops_the_run(tmp_path):
    # a stand-in run: rank 1 steps, then rank 0 does, then it would run on forever
    script = ("import json, os, signal, time\n"
              "with open(os.environ['FLASHDIST_STARTUP_STAMPS'], 'a') as out:\n"
              "    for rank, event in [(1, 'built'), (1, 'first_step'), (0, 'fit_start'), (0, 'first_step')]:\n"
              "        out.write(json.dumps({'rank': rank, 'event': event, 't': time.time()}) + '\\n')\n"
              "open(os.environ['PID_FILE'], 'w').write(str(os.getpid()))\n"
              "signal.pause()\n")
    result = startup.time_to_first_step(_child(script), tmp_path / "stamps.jsonl", {"PID_FILE": str(tmp_path / "pid")})
    assert result["first_step_s"] >= result["rank0_fit_start_s"] >= result["rank1_built_s"] >= 0
    assert result["rank0_built_s"] is None and result["rank1_fit_start_s"] is None
    with pytest.raises(ProcessLookupError):  # stopped, and reaped
        os.kill(int((tmp_path / "pid").read_text()), 0)


def test_a_run_that_ends_before_a_step_is_an_error_with_its_stderr(tmp_path):
    with pytest.raises(RuntimeError, match="ended \\(3\\) before a step:\n.*no such config"):
        startup.time_to_first_step(_child("import sys; print('no such config', file=sys.stderr); sys.exit(3)"), tmp_path / "stamps.jsonl", {})


# --calls: what a fit does before its first step, counted (flashdist/bench/startup_calls.py)

@pytest.mark.parametrize("filename, package", [
    ("/v/lib/python3.11/site-packages/torch/nn/modules/module.py", "torch"),
    ("/v/lib/python3.11/site-packages/typing_extensions.py", "typing_extensions"),
    ("/work/main/flashdist/text/causal_lm.py", "flashdist"),
    ("~", "builtins"),
    ("<frozen importlib._bootstrap>", "import machinery"),
    ("/usr/lib/python3.11/dataclasses.py", "stdlib"),
])
def test_each_profiled_function_is_put_under_its_package(filename, package):
    from flashdist.bench.startup_calls import package_of

    assert package_of(filename) == package


def test_compare_pairs_the_counts_of_one_rank():
    from flashdist.bench.startup_calls import compare

    before = {"calls": {"builtins": 100, "peft": 7, "torch": 50, "flashdist": 10}, "modules": ["torch", "peft", "peft.tuners"]}
    after = {"calls": {"builtins": 90, "torch": 50, "flashdist": 13}, "modules": ["torch", "flashdist.text.token_weighting"]}
    diff = compare(before, after)
    assert diff["calls"] == (167, 153) and diff["modules"] == (3, 2)
    assert diff["calls_changed"] == [("builtins", 100, 90), ("peft", 7, 0), ("flashdist", 10, 13)]  # torch unchanged: left out
    assert diff["modules_only_before"] == ["peft", "peft.tuners"] and diff["modules_only_after"] == ["flashdist.text.token_weighting"]


def test_the_profile_is_written_at_the_first_optimizer_step_and_the_fit_stops(tmp_path, monkeypatch):
    import cProfile

    from flashdist.bench import startup_calls

    profile = cProfile.Profile()
    monkeypatch.setattr(sys.modules["__main__"], "PROFILE", profile, raising=False)  # as `python -m ...startup_calls` sets it
    monkeypatch.setenv(startup_calls.CALLS_ENV, str(tmp_path))
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=5, accumulate_grad_batches=2, callbacks=[startup_calls.DumpAtFirstStep()],
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)
    profile.enable()
    try:
        trainer.fit(_Tiny(), DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=2))
    finally:
        profile.disable()  # a no-op after the callback's, and the profile off if the fit failed first
    assert trainer.global_step == 1  # stopped after the first of 5 steps
    counts = startup_calls.count(tmp_path)
    assert list(counts) == [0] and "lightning.pytorch" in counts[0]["modules"]
    assert counts[0]["calls"]["lightning"] > 0 and counts[0]["calls"]["torch"] > 0
    assert any("first optimizer step" in line for line in startup_calls.report("tiny", {"flashdist": counts}))


def test_the_before_side_imports_the_before_checkouts_flashdist(tmp_path):
    # `python -m` puts the working directory first on sys.path: run from this checkout, the before side
    # would import this checkout's flashdist whatever PYTHONPATH says. A stand-in checkout whose
    # flashdist.cli.main says which flashdist was imported, and stamps rank 0's step.
    before = tmp_path / "before"
    (before / "flashdist" / "cli").mkdir(parents=True)
    (before / "flashdist" / "__init__.py").write_text("")
    (before / "flashdist" / "cli" / "__init__.py").write_text("")
    (before / "flashdist" / "cli" / "main.py").write_text(
        "import json, os, signal, time\n"
        "import flashdist\n"
        "open(os.environ['PROBE'], 'w').write(flashdist.__file__)\n"
        "with open(os.environ['FLASHDIST_STARTUP_STAMPS'], 'a') as out:\n"
        "    out.write(json.dumps({'rank': 0, 'event': 'first_step', 't': time.time()}) + '\\n')\n"
        "signal.pause()\n")
    for config in set(startup.CONFIGS.values()):
        (before / config).parent.mkdir(parents=True, exist_ok=True)
        (before / config).write_text("")
    startup.check_request(["llm"], before)
    command, env, cwd = startup.sides("llm", tmp_path / "runs", before)["before"]
    assert command[1:4] == ["-m", "flashdist.cli.main", "fit"]
    assert startup.time_to_first_step(command, tmp_path / "stamps.jsonl", {**env, "PROBE": str(tmp_path / "probe")}, cwd)["first_step_s"] >= 0
    assert (tmp_path / "probe").read_text() == str(before / "flashdist" / "__init__.py")


def test_a_before_checkout_without_the_configs_is_refused(tmp_path):
    from flashdist.errors import ConfigError

    (tmp_path / "flashdist" / "cli").mkdir(parents=True)
    (tmp_path / "flashdist" / "cli" / "main.py").write_text("")
    with pytest.raises(ConfigError, match="has no \\['configs/llm_finetune.yaml'\\]"):
        startup.check_request(["llm"], tmp_path)
