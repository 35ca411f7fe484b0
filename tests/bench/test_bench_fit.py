"""`flashdist bench fit` end to end on tiny fits (structure only, no timing claims), and its pairing as arithmetic."""

from __future__ import annotations

import json

import pytest

from flashdist.bench import fit
from flashdist.bench.fit_worker import groups_for, round_order
from flashdist.cli.main import main
from flashdist.errors import ConfigError


def _fits(values_by_variant):
    return [
        {"variant": v, "round": r, "median_us": x, "cpu_median_us": x / 2, "fit_wall_s": 1.0, "steps_taken": 10}
        for v, xs in values_by_variant.items()
        for r, x in enumerate(xs)
    ]


def test_ratios_pair_fits_by_round():
    values = {"ddp/torch": [100.0, 200.0, 300.0], "ddp/lightning": [180.0, 360.0, 540.0], "ddp/flashdist": [150.0, 300.0, 450.0],
              "fsdp/fsdp2": [1000.0, 2000.0, 4000.0], "fsdp/flashdist": [1010.0, 2020.0, 4040.0]}
    config = {"workload": "mlp", "devices": 2, "steps": 10, "warmup_steps": 2, "repeats": 3,
              "groups": {"ddp": ["torch", "lightning", "flashdist"], "fsdp": ["fsdp2", "flashdist"]}}
    summary = fit.summarize(config, _fits(values))
    ddp = summary["ratios"]["ddp"]
    # round-to-round drift (100 -> 300) cancels in the paired ratios
    assert ddp["flashdist / torch"]["per_round"] == pytest.approx([1.5, 1.5, 1.5])
    assert ddp["lightning / torch"]["median"] == pytest.approx(1.8)
    assert ddp["flashdist / lightning"]["median"] == pytest.approx(150 / 180)
    assert set(summary["ratios"]["fsdp"]) == {"flashdist / fsdp2"}
    assert summary["ratios"]["fsdp"]["flashdist / fsdp2"]["cpu_median"] == pytest.approx(1.01)
    assert summary["variants"]["ddp/flashdist"]["us_per_step"] == 300.0


@pytest.mark.parametrize("strategy, hand, plain", [("deepspeed", "deepspeed", "lightning_ds"), ("fsdp", "fsdp2", "lightning_fsdp2")])
def test_sharded_strategies_split_into_lightnings_strategy_over_the_hand_loop_and_flashdist_over_lightning(strategy, hand, plain):
    values = {f"{strategy}/{hand}": [100.0, 200.0], f"{strategy}/{plain}": [140.0, 280.0], f"{strategy}/flashdist": [147.0, 294.0]}
    config = {"workload": "mlp", "devices": 2, "steps": 10, "warmup_steps": 2, "repeats": 2,
              "groups": groups_for(2, strategies=[strategy], harnesses=[plain, "flashdist"])}
    ratios = fit.summarize(config, _fits(values))["ratios"][strategy]
    assert ratios[f"{plain} / {hand}"]["median"] == pytest.approx(1.4)  # the floor Lightning sets
    assert ratios[f"flashdist / {plain}"]["median"] == pytest.approx(1.05)  # what flashdist adds
    assert ratios[f"flashdist / {hand}"]["median"] == pytest.approx(1.47)


def test_each_round_runs_every_variant_once_with_a_strategys_harnesses_adjacent():
    import random

    groups = groups_for(2)
    rng = random.Random(3)
    orders = [round_order(groups, rng) for _ in range(20)]
    variants = sorted(f"{s}/{h}" for s, hs in groups.items() for h in hs)
    for order in orders:
        assert sorted(order) == variants
        strategies = [v.split("/")[0] for v in order]
        assert [s for i, s in enumerate(strategies) if i == 0 or s != strategies[i - 1]] == list(dict.fromkeys(strategies))
    assert len({tuple(order) for order in orders}) > 1, "the order is shuffled from round to round"


def test_cli_times_flashdist_against_the_hand_written_loop_lightning_and_hf(tmp_path, capsys):
    out_json, out_png, out_txt = tmp_path / "fit.json", tmp_path / "fit.png", tmp_path / "fit.txt"
    code = main(["bench", "fit", "--workloads", "mlp", "--devices", "1", "--steps", "6", "--warmup-steps", "2", "--repeats", "1",
                 "--warmup-rounds", "0", "--json", str(out_json), "--plot", str(out_png), "--table", str(out_txt), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "flashdist / torch" in printed and "method:" in printed
    result = json.loads(out_json.read_text())
    assert set(result) == {"method", "environment", "configs", "command"}
    assert result["command"].startswith("flashdist bench fit --workloads mlp --devices 1 --steps 6")
    (config,) = result["configs"]
    assert config["workload"] == "mlp" and config["devices"] == 1 and config["device"] == "cpu"
    assert result["environment"]["device"] == "cpu" and result["method"].startswith("Device: cpu")
    assert set(config["variants"]) == {"single/torch", "single/lightning", "single/flashdist", "single/hf"}
    for stats in config["variants"].values():
        assert stats["us_per_step"] > 0 and stats["steps_per_fit"] == 2 + 6 + 1
    expected = {"lightning / torch", "flashdist / torch", "hf / torch", "flashdist / lightning", "flashdist / hf"}
    assert set(config["ratios"]["single"]) == expected
    for stats in config["ratios"]["single"].values():
        assert stats["ci95"][0] <= stats["median"] <= stats["ci95"][1] and stats["median"] > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "flashdist / hf" in out_txt.read_text()


@pytest.mark.multiprocess
def test_two_processes_under_torchrun_run_plain_lightnings_own_deepspeed_and_fsdp2_strategies():
    # the hand-written engine and fully_shard loops, and plain Lightning's own DeepSpeedStrategy and
    # ModelParallelStrategy, in one torchrun (flashdist under both is fitted by tests/strategies; its
    # pairing here is arithmetic, above)
    result = fit.run(workloads=["mlp"], devices=(2,), strategies=["deepspeed", "fsdp"],
                     harnesses=["lightning_ds", "lightning_fsdp2"], steps=6, warmup_steps=2, repeats=1, warmup_rounds=0)
    (config,) = result["configs"]
    assert config["devices"] == 2
    assert set(config["variants"]) == {"deepspeed/deepspeed", "deepspeed/lightning_ds", "fsdp/fsdp2", "fsdp/lightning_fsdp2"}
    assert all(stats["steps_per_fit"] == 2 + 6 + 1 for stats in config["variants"].values())
    assert set(config["ratios"]["deepspeed"]) == {"lightning_ds / deepspeed"}
    assert set(config["ratios"]["fsdp"]) == {"lightning_fsdp2 / fsdp2"}


def test_the_hand_written_fsdp2_loop_runs_the_optimizer_kernel_flashdists_route_picks():
    from flashdist.bench.harnesses import FSDP2_KERNEL, fsdp2_kernel_flags

    assert FSDP2_KERNEL == {"fused": True}, "AdamW over CPU DTensors: flashdist builds the fused kernel"
    assert fsdp2_kernel_flags("meta") == {"foreach": True}, "no fused kernel there: foreach, as the route does"


def test_an_unknown_workload_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "fit", "--workloads", "resnet"])
    assert exit_info.value.code == 2 and "mlp, gpt2" in capsys.readouterr().err


def test_cuda_on_a_machine_without_one_is_refused_before_any_fit_starts(tmp_path, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: nothing to refuse")
    launched = []
    monkeypatch.setattr(fit, "_launch", lambda *args: launched.append(args))  # a worker started would be work done
    out_json = tmp_path / "fit.json"
    assert main(["bench", "fit", "--device", "cuda", "--devices", "1,2", "--json", str(out_json)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("--device cuda with 2 process(es), one GPU each, but this machine has 0 CUDA device(s)") == 1
    assert "HINT:" in captured.err and captured.out == "" and not out_json.exists() and launched == []
    with pytest.raises(ConfigError, match=r"--device 'tpu' is not a device.*Accepted: 'cpu', 'cuda'"):
        fit.run(device="tpu")


def test_the_device_reaches_every_one_process_harness(monkeypatch):
    # The CUDA run is this code with device="cuda": every harness must take its device from the
    # workload (a harness that hardcoded "cpu" would read it nowhere and fail here).
    from flashdist.bench import fit_worker, workloads

    reads: dict[str, int] = {}
    running: list[str] = []

    class Recorded(workloads.Workload):
        def __getattribute__(self, name):
            if name == "device":
                reads[running[-1]] = reads.get(running[-1], 0) + 1
            return super().__getattribute__(name)

    monkeypatch.setattr(workloads, "workload", lambda name, device="cpu": Recorded(name, workloads.MLP_BATCH, device))
    config = {"workload": "mlp", "seed": 0, "warmup_steps": 1, "device": "cpu"}
    samples = workloads.Workload("mlp", workloads.MLP_BATCH).samples(4 * workloads.MLP_BATCH)
    for variant in ("single/torch", "single/lightning", "single/flashdist", "single/hf"):
        running.append(variant)
        record = fit_worker.one_fit(variant, config, samples, total_steps=4, world=1)
        assert record["device"] == "cpu" and record["steps_taken"] == 4
    assert sorted(reads) == ["single/flashdist", "single/hf", "single/lightning", "single/torch"]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_bench_fit_on_cuda_times_every_one_process_harness_by_cuda_events(tmp_path):
    out_json = tmp_path / "fit.json"
    assert main(["bench", "fit", "--device", "cuda", "--workloads", "mlp", "--devices", "1", "--steps", "8", "--warmup-steps", "2",
                 "--repeats", "1", "--warmup-rounds", "0", "--json", str(out_json), "--plot", "none"]) == 0
    result = json.loads(out_json.read_text())
    (config,) = result["configs"]
    assert config["device"] == "cuda" and result["environment"]["device"].startswith("cuda: ")
    assert set(config["variants"]) == {"single/torch", "single/lightning", "single/flashdist", "single/hf"}
    assert all(stats["us_per_step"] > 0 and stats["steps_per_fit"] == 2 + 8 + 1 for stats in config["variants"].values())
