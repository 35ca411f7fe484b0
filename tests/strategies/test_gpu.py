"""GPU-only routes: FusedAdam under CUDA DeepSpeed, FSDP2 on CUDA, Lightning's FSDP1.

Skipped with a reason where there is no CUDA device (CI's CPU runners); run on a GPU host with
``pytest -m gpu tests/strategies``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.fitting import run_fit

pytestmark = pytest.mark.usefixtures("deepspeed_ops_built")

GPUS = torch.cuda.device_count()
needs_gpu = pytest.mark.skipif(GPUS == 0, reason="needs a CUDA device; this machine has none")
SIZES = dict(dataset_size=200, batch_size=8, accumulate_grad_batches=3, max_epochs=2, weight_decay=0.01, accelerator="gpu")


def _devices() -> int:
    return min(GPUS, 2)


def _planned_steps(devices: int) -> int:
    batches_per_rank = math.ceil(math.ceil(200 / devices) / 8)
    return 2 * math.ceil(batches_per_rank / 3)


@pytest.mark.gpu
@pytest.mark.multiprocess
@needs_gpu
def test_cuda_deepspeed_routes_adamw_to_fused_adam(tmp_path):
    summary = run_fit(tmp_path, strategy="deepspeed_stage_2", devices=_devices(), **SIZES)
    extra = json.loads((tmp_path / "fit_extra.json").read_text())
    assert summary["optimizer"] == extra["optimizer_class"] == "FusedAdam"
    assert extra["strategy_class"] == "FlashDeepSpeedStrategy"
    steps = _planned_steps(_devices())
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == extra["engine_global_steps"] == steps
    assert summary["lr"]["after_last_scheduler_step"] == 0.0


@pytest.mark.gpu
@pytest.mark.multiprocess
@needs_gpu
def test_cuda_fsdp2_uses_the_fused_kernel(tmp_path):
    summary = run_fit(tmp_path, strategy="fsdp", devices=_devices(), **SIZES)
    assert "fused=True" in summary["optimizer_reason"]
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == _planned_steps(_devices())


@pytest.mark.gpu
@pytest.mark.multiprocess
@needs_gpu
def test_lightning_fsdp1_keeps_original_params_so_no_decay_groups_survive(tmp_path):
    summary = run_fit(tmp_path, strategy="ddp", lightning_fsdp1=True, devices=_devices(), **SIZES)
    extra = json.loads((tmp_path / "fit_extra.json").read_text())
    assert [g["weight_decay"] for g in extra["param_groups"]] == [0.01, 0.0]
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == _planned_steps(_devices())
