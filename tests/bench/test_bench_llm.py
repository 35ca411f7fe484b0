"""`flashdist bench llm`'s plumbing as arithmetic: variants, pairing against ddp, tokens/s, collective counts, the table.

No fit runs here and nothing is timed: the fits the worker runs are the same CausalLM + flashdist.Trainer
fits tests/text/test_lm_strategies.py launches under every strategy.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from flashdist.bench import llm_strategies, llm_worker
from flashdist.cli import bench


def _fits(step_ms_by_variant: dict[str, list[float]], collectives: dict | None = None) -> list[dict]:
    fits = []
    for name, values in step_ms_by_variant.items():
        for round_index, value in enumerate(values, start=-1):  # the first is the untimed, profiled round
            fits.append({"variant": name, "round": round_index, "median_ms": value, "cpu_median_ms": value / 4, "fit_wall_s": 2.0,
                         "trainable_parameters": 7168 if "lora" in name else 217_664,
                         "collectives": (collectives or {}).get(name, {}) if round_index < 0 else {}})
    return fits


def test_every_strategy_is_a_variant_and_the_cli_knows_each_name():
    assert bench.LLM_VARIANTS == tuple(v.name for v in llm_worker.VARIANTS)
    assert {v.strategy for v in llm_worker.VARIANTS} == {"ddp", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp"}
    assert {(v.strategy, v.lora) for v in llm_worker.VARIANTS} == {(s, lora) for s in ("ddp", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp")
                                                                   for lora in (False, True)}
    kept = [v for v in llm_worker.VARIANTS if not v.reshard_after_forward]
    assert [(v.strategy, v.lora) for v in kept] == [("fsdp", False), ("fsdp", True)]
    assert llm_worker.strategy_for(kept[1]).reshard_after_forward is False
    assert llm_worker.strategy_for(llm_worker.BY_NAME["fsdp+lora"]) == "fsdp"  # the default: reshard after forward


def test_an_unknown_variant_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["llm", "--variants", "ddp,zero4"])
    assert "give a comma-separated list of ddp," in capsys.readouterr().err


def test_each_variant_is_paired_with_ddp_of_its_round_and_the_profiled_round_is_not_timed():
    # ddp drifts 100 -> 200 -> 400 ms between rounds; fsdp+lora is 1.5x ddp in every round.
    config = {"variants": ["ddp", "fsdp+lora"], "seq_length": 128, "batch_size": 4}
    summary = llm_strategies.summarize(config, _fits({"ddp": [9999.0, 100.0, 200.0, 400.0], "fsdp+lora": [1.0, 150.0, 300.0, 600.0]}))
    assert summary["tokens_per_step"] == 128 * 4 * 2 and summary["rounds_timed"] == 3
    row = summary["variants"]["fsdp+lora"]
    assert row["per_round_vs_ddp"] == pytest.approx([1.5, 1.5, 1.5]) and row["step_vs_ddp"] == pytest.approx(1.5)
    assert row["step_ms"] == pytest.approx(300.0)  # 9999 and 1 (round -1) left out
    assert row["tokens_per_s"] == pytest.approx(1024 / 0.3)
    assert row["cpu_step_vs_ddp"] == pytest.approx(1.5) and row["trainable_parameters"] == 7168


def test_collectives_are_counted_per_step_by_kind_from_the_c10d_records_only():
    events = [SimpleNamespace(name=name, cpu_time_total=us) for name, us in [
        ("c10d::_allgather_base_", 2000.0), ("c10d::_allgather_base_", 1000.0), ("gloo:all_gather", 900.0),  # gloo's own record: inside c10d's
        ("c10d::_reduce_scatter_base_", 4000.0), ("c10d::allreduce_", 500.0), ("c10d::broadcast_", 100.0), ("aten::mm", 7000.0),
        ("FSDP::all_gather (model.layers.0)", 3000.0)]]  # FSDP2's own wrapper record: not a c10d call
    counted = llm_worker.count_collectives(events, steps=2)
    assert counted == {"all_gather": {"calls_per_step": 1.0, "ms_per_step": 1.5}, "all_reduce": {"calls_per_step": 0.5, "ms_per_step": 0.25},
                       "broadcast": {"calls_per_step": 0.5, "ms_per_step": 0.05}, "reduce_scatter": {"calls_per_step": 0.5, "ms_per_step": 2.0}}
    assert llm_strategies.collectives_text(counted).startswith("1 all_gather (1.5 ms) + 0.5 all_reduce (0.2 ms)")


def test_the_table_has_a_row_per_variant_with_its_ratio_and_collectives():
    config = {"variants": ["ddp", "deepspeed_stage_3"], "seq_length": 16, "batch_size": 2}
    collectives = {"deepspeed_stage_3": {"all_gather": {"calls_per_step": 78.0, "ms_per_step": 12.7}}}
    result = {"settings": config, "method": "paired rounds", "environment": {"load_average_1_5_15min": [3.5, 3.0, 2.0], "git_commit": "abc1234"},
              **llm_strategies.summarize(config, _fits({"ddp": [1.0, 40.0, 50.0], "deepspeed_stage_3": [1.0, 120.0, 150.0]}, collectives))}
    out = io.StringIO()
    llm_strategies.print_table(result, Console(file=out, width=250))
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "deepspeed_stage_3" in line)
    # 16 tokens x 2 per rank x 2 ranks per step over the median step of 135 ms: 474 tokens/s
    assert "3.00 [3.00, 3.00]" in row and "78 all_gather (12.7 ms)" in row and " 474 " in row
    assert "load average (1, 5, 15 min) before [3.5, 3.0, 2.0]" in text and "method: paired rounds" in text


def test_torch_profiler_names_gloo_collectives_as_c10d_ops_which_the_counter_reads(tmp_path):
    """The assumption bench llm's collective counts rest on: a collective shows in torch's profiler as a ``c10d::`` op."""
    import torch
    import torch.distributed as dist

    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(2):  # two "steps"
                shard = torch.ones(4)
                dist.all_gather_single(torch.empty(4), shard)
                dist.reduce_scatter_single(torch.empty(4), shard)
                dist.all_reduce(shard)
                dist.all_reduce(shard)
                dist.broadcast(shard, src=0)
    finally:
        dist.destroy_process_group()
    counted = llm_worker.count_collectives(profiler.events(), steps=2)
    assert {kind: entry["calls_per_step"] for kind, entry in counted.items()} == {
        "all_gather": 1.0, "reduce_scatter": 1.0, "all_reduce": 2.0, "broadcast": 1.0}
