"""DeepSpeed-specific real fits: the measured awkward sizes, a user config with "auto"
values, and DeepSpeed's own schedules from the registry (2 CPU processes each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.fitting import run_fit

pytestmark = pytest.mark.usefixtures("deepspeed_ops_built")


def _extra(root: Path) -> dict:
    return json.loads((root / "fit_extra.json").read_text())


def _lr_column(root: Path) -> list[float]:
    return [float(line.split(",")[1]) for line in (root / "lr.csv").read_text().splitlines()[1:]]


@pytest.mark.multiprocess
def test_deepspeed_on_the_measured_sizes_plan_engine_and_scheduler_agree_on_57(tmp_path):
    # 1000 samples, batch 9, accumulation 3, 3 epochs, 2 ranks: Lightning + DeepSpeed left
    # alone give estimate 57, global_step/scheduler 54, engine 56.
    summary = run_fit(tmp_path, strategy="deepspeed_stage_2", dataset_size=1000, batch_size=9, accumulate_grad_batches=3, max_epochs=3)
    extra = _extra(tmp_path)
    assert summary["micro_batches_per_epoch_per_rank"] == 56
    assert summary["optimizer_steps_per_epoch"] == [19, 19, 19]
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 57
    assert extra["engine_global_steps"] == extra["global_step"] == 57
    assert summary["lr"]["after_last_scheduler_step"] == 0.0
    assert len(_lr_column(tmp_path)) == 57


HF_STYLE_CONFIG = {
    "zero_optimization": {"stage": 2},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {"total_num_steps": "auto", "warmup_num_steps": "0.2dur", "warmup_max_lr": "auto", "warmup_min_lr": "auto"},
    },
}


def _deepspeed_warmup_decay_lrs(total: int, warmup: int, peak: float) -> list[float]:
    """The LR of each update under DeepSpeed's WarmupDecayLR, computed in this process."""
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = WarmupDecayLR(optimizer, total_num_steps=total, warmup_num_steps=warmup, warmup_max_lr=peak, warmup_min_lr=0.0)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return lrs


@pytest.mark.multiprocess
def test_user_config_auto_values_are_filled_and_its_optimizer_keeps_the_no_decay_groups(tmp_path):
    config_path = tmp_path / "ds_config.json"
    config_path.write_text(json.dumps(HF_STYLE_CONFIG))
    summary = run_fit(
        tmp_path, strategy=str(config_path), optimizer=None, lr_scheduler=None, weight_decay=0.01,
        dataset_size=200, batch_size=8, accumulate_grad_batches=3, max_epochs=2,
    )
    extra = _extra(tmp_path)
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 10
    assert extra["engine_global_steps"] == 10
    # The config's optimizer, built by DeepSpeed: its "AdamW" type is its FusedAdam kernel (CPU build here).
    assert extra["optimizer_class"] == "FusedAdam" and extra["optimizer_defaults"]["weight_decay"] == 0.01
    assert [g["weight_decay"] for g in extra["param_groups"]] == [0.01, 0.0]
    # total_num_steps=auto → 10, warmup 0.2dur → 2, warmup_max_lr=auto → Task's 0.01.
    assert _lr_column(tmp_path) == _deepspeed_warmup_decay_lrs(total=10, warmup=2, peak=0.01)


def _deepspeed_warmup_lrs(total: int, warmup: int, peak: float) -> list[float]:
    from deepspeed.runtime.lr_schedules import WarmupLR

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    scheduler = WarmupLR(optimizer, warmup_min_lr=0.0, warmup_max_lr=peak, warmup_num_steps=warmup)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return lrs


HF_CONFIGS = Path(__file__).parent


@pytest.mark.multiprocess
@pytest.mark.parametrize("name", ["hf_ds_config_zero2.json", "hf_ds_config_zero3.json"])
def test_the_stock_hugging_face_configs_train_unchanged_with_an_exact_ledger(tmp_path, name):
    # The files are the transformers documentation's ZeRO-2 / ZeRO-3 examples, every value "auto",
    # used as they are: the Task names no optimizer and no scheduler, so the config's win.
    stock = json.loads((HF_CONFIGS / name).read_text())
    summary = run_fit(
        tmp_path, strategy=str(HF_CONFIGS / name), optimizer=None, lr_scheduler=None,
        dataset_size=200, batch_size=8, accumulate_grad_batches=3, max_epochs=2,
    )
    extra = _extra(tmp_path)
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 10
    assert extra["engine_global_steps"] == extra["global_step"] == 10
    assert extra["optimizer_class"] == "DeepSpeedCPUAdam"  # the config's AdamW, offloaded
    filled = extra["deepspeed_config"]
    assert filled["fp16"]["enabled"] is False and filled["bf16"]["enabled"] is False  # precision 32-true
    assert filled["gradient_clipping"] == 0.0  # gradient_clip_val unset: no clipping, as under DDP
    assert (filled["train_micro_batch_size_per_gpu"], filled["gradient_accumulation_steps"], filled["train_batch_size"]) == (8, 3, 48)
    assert filled["optimizer"]["params"] == {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    hidden = 32  # the widest nn.Linear of fit_tiny's model (it has no config.hidden_size)
    zero = filled["zero_optimization"]
    if stock["zero_optimization"]["stage"] == 3:
        assert (zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"], zero["stage3_param_persistence_threshold"]) == (
            hidden * hidden, int(0.9 * hidden * hidden), 10 * hidden)
    else:
        assert zero["reduce_bucket_size"] == 2e8  # concrete values are kept
    assert _lr_column(tmp_path) == _deepspeed_warmup_lrs(total=10, warmup=1, peak=0.01)


@pytest.mark.multiprocess
def test_deepspeed_schedules_from_the_registry_train_under_deepspeed_and_max_steps_cuts_mid_epoch(tmp_path):
    # 5 steps per epoch; max_steps=7 stops 2 updates into epoch 2, engine and Lightning alike.
    summary = run_fit(
        tmp_path, strategy="deepspeed_stage_1", lr_scheduler=["WarmupDecayLR", {"warmup_num_steps": "0.2dur"}],
        dataset_size=200, batch_size=8, accumulate_grad_batches=3, max_epochs=2, max_steps=7,
    )
    extra = _extra(tmp_path)
    assert summary["lr_scheduler"] == "WarmupDecayLR"
    assert summary["optimizer_steps_per_epoch"] == [5, 2]
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 7
    assert extra["engine_global_steps"] == extra["global_step"] == 7
    assert summary["planned_warmup_steps"] == 2  # ceil(0.2 × 7)
    assert _lr_column(tmp_path) == _deepspeed_warmup_decay_lrs(total=7, warmup=2, peak=0.01)


@pytest.mark.multiprocess
def test_a_contradiction_only_the_ranks_can_find_is_printed_once_and_every_rank_exits(tmp_path):
    # A custom sampler: the launching process cannot know how Lightning shards it, so the step
    # plan (2 steps: 32 samples, 2 ranks, batch 8) and the config's total are checked inside each
    # rank, where both ranks find the same contradiction.
    config = {"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
              "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 99, "warmup_num_steps": "auto"}}}
    proc = run_fit(tmp_path, strategy=config, optimizer=None, lr_scheduler=None, list_sampler=True, dataset_size=32, max_epochs=1,
                   expect_ok=False)
    output = proc["stdout"] + proc["stderr"]
    message = "scheduler.params.total_num_steps=99 contradicts the step plan's total optimizer steps = 2"
    assert proc["returncode"] != 0 and output.count(message) == 1, output[-6000:]
    assert "initializing deepspeed distributed: GLOBAL_RANK: 1" in output  # it was the ranks that found it
    assert not (tmp_path / "summary.json").exists()
