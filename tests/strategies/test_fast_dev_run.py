"""``fast_dev_run`` under each strategy family on 2 processes: planned = taken, engine included."""

from __future__ import annotations

import json

import pytest

from tests.fitting import run_fit


@pytest.mark.multiprocess
@pytest.mark.usefixtures("deepspeed_ops_built")
@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_stage_2", "fsdp"])
def test_fast_dev_run_under_each_strategy_plans_its_steps_and_takes_them(tmp_path, strategy):
    # fast_dev_run=True with accumulation 2 on 2 ranks: 1 micro-batch per rank, a partial window
    # flushed at the epoch end → 1 optimizer step (under DeepSpeed too: flashdist tells the engine).
    extra = {"shard_module_classes": ["Linear"]} if strategy == "fsdp" else {}
    summary = run_fit(tmp_path, strategy=strategy, dataset_size=200, batch_size=8, accumulate_grad_batches=2, max_epochs=3,
                      extra_trainer={"fast_dev_run": True}, **extra)
    assert summary["micro_batches_per_epoch_per_rank"] == 1
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 1
    extra_out = json.loads((tmp_path / "fit_extra.json").read_text())
    assert extra_out["global_step"] == 1
    if strategy == "deepspeed_stage_2":
        assert extra_out["engine_global_steps"] == 1
