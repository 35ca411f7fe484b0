"""DeepSpeed (ZeRO-2, 2 CPU processes): a resume on another data-parallel size is refused up front.

DeepSpeed cannot re-shard ZeRO optimizer state ("Automatic adjustment of ZeRO's optimizer
state partitioning with a new world size is not currently supported"), and says so only after
every rank launched and built the model. flashdist refuses in ``fit`` before any process
starts, under every resume_policy, naming both sizes and the ways out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.runtime.checkpoint import sharded_checkpoint_dp_size
from flashdist.tasks.classification import ClassificationTask
from tests.runtime import harness

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory) -> dict[int, Path]:
    runs = {}
    for ranks in (2, 1):
        root = tmp_path_factory.mktemp(f"deepspeed{ranks}")
        summary = harness.fit_ok(root, strategy="deepspeed_stage_2", devices=ranks, checkpoint_every_n_epochs=1)
        assert summary["optimizer_steps"] == summary["planned_total_steps"] == 32 // ranks
        runs[ranks] = harness.ckpt(root, "epoch=0-*.ckpt")
    return runs


@pytest.mark.parametrize("policy", ["keep_schedule", "rescale"])
@pytest.mark.parametrize(("saved_ranks", "ranks"), [(2, 1), (1, 2)])
def test_resume_on_another_data_parallel_size_is_refused_before_any_process_starts(deepspeed_runs, tmp_path, saved_ranks, ranks, policy):
    checkpoint = deepspeed_runs[saved_ranks]
    assert sharded_checkpoint_dp_size(checkpoint) == saved_ranks
    trainer = flashdist.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=ranks, strategy="deepspeed_stage_2",
        logger=False, enable_progress_bar=False, resume_policy=policy,
    )
    x = torch.randn(32, 4)
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01)
    with pytest.raises(ConfigError, match=rf"sharded over {saved_ranks} data-parallel rank\(s\); this fit has {ranks}.*HINT: resume on {saved_ranks} rank"):
        trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8), ckpt_path=str(checkpoint))
    assert trainer.ledger.optimizer_steps == 0 and not (tmp_path / "summary.json").exists()
