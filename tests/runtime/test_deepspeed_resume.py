"""DeepSpeed checkpoints resumed on another data-parallel size, through DeepSpeed's universal format.

Real ZeRO checkpoints of 2 (or 1) CPU processes, resumed on 1 (or 2) under each adapting policy;
the LR trace is checked against the policy's arithmetic, using the uninterrupted DDP runs of the
same schedule (the LR is a function of the optimizer step, whatever the strategy). For CI time:
ZeRO-2 both directions, ZeRO-1 and ZeRO-3 2 → 1 only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.runtime.manifest import manifest_path
from flashdist.runtime.reshard import convert_to_universal, sharded_dp_size, universal_sibling
from flashdist.runtime.trust import verify
from flashdist.tasks.classification import ClassificationTask
from tests.runtime import damage, harness

pytestmark = pytest.mark.multiprocess
EPOCH0 = "epoch=0-*.ckpt"


@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory, deepspeed_2ranks) -> dict[tuple[int, int], Path]:
    """(stage, ranks) → the run directory; ZeRO-2 on 2 ranks is the session's."""
    runs = {(2, 2): deepspeed_2ranks.root}
    for stage, ranks in ((2, 1), (1, 2), (3, 2)):
        root = tmp_path_factory.mktemp(f"zero{stage}-{ranks}ranks")
        summary = harness.fit_ok(root, strategy=f"deepspeed_stage_{stage}", devices=ranks, checkpoint_every_n_epochs=1)
        assert summary["optimizer_steps"] == summary["planned_total_steps"] == 32 // ranks
        runs[(stage, ranks)] = root
    return runs


def _resume(run: Path, tmp_path: Path, stage: int, devices: int, policy: str):
    root = harness.copy_run(run, tmp_path / "run")
    (root / "summary.json").unlink()
    checkpoint = harness.ckpt(root, EPOCH0)
    proc = harness.fit(root, strategy=f"deepspeed_stage_{stage}", devices=devices, resume_policy=policy, ckpt_path=str(checkpoint))
    assert proc.returncode == 0, proc.stderr[-6000:]
    universal = universal_sibling(checkpoint)
    assert f"converted {checkpoint} to DeepSpeed's universal format: {universal}" in proc.stderr
    assert manifest_path(universal).exists() and verify(universal) == []  # the conversion has its own manifest
    return root, harness.summary(root), harness.lrs(root)


def test_zero2_2_to_1_rank_keep_schedule_keeps_every_lr(deepspeed_runs, uninterrupted_2ranks, tmp_path):
    assert sharded_dp_size(harness.ckpt(deepspeed_runs[(2, 2)], EPOCH0)) == 2
    root, summary, lrs = _resume(deepspeed_runs[(2, 2)], tmp_path, stage=2, devices=1, policy="keep_schedule")
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 16 and summary["completed"]
    assert lrs == uninterrupted_2ranks.lrs


def test_zero2_1_to_2_ranks_rescale_keeps_the_lr_curve_over_samples(deepspeed_runs, uninterrupted_1rank, tmp_path):
    root, summary, lrs = _resume(deepspeed_runs[(2, 1)], tmp_path, stage=2, devices=2, policy="rescale")
    # 16 updates of 8 samples, then 8 of 16: the 1-rank schedule at every other step
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 24 and summary["schedule_total_steps"] == 16
    assert lrs[:16] == uninterrupted_1rank.lrs[:16] and lrs[16:] == uninterrupted_1rank.lrs[16::2]


def test_zero1_2_to_1_rank_rescale_keeps_the_lr_curve_over_samples(deepspeed_runs, uninterrupted_1rank, tmp_path):
    root, summary, lrs = _resume(deepspeed_runs[(1, 2)], tmp_path, stage=1, devices=1, policy="rescale")
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 24 and summary["schedule_total_steps"] == 32
    assert lrs[8:] == uninterrupted_1rank.lrs[16:]


def test_zero3_2_to_1_rank_keep_global_batch_doubles_accumulation_and_keeps_every_lr(deepspeed_runs, uninterrupted_2ranks, tmp_path):
    root, summary, lrs = _resume(deepspeed_runs[(3, 2)], tmp_path, stage=3, devices=1, policy="keep_global_batch")
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == 16
    assert lrs == uninterrupted_2ranks.lrs


def test_strict_refuses_another_data_parallel_size_before_any_process_starts(deepspeed_runs, tmp_path):
    checkpoint = harness.ckpt(deepspeed_runs[(2, 2)], EPOCH0)
    trainer = flashdist.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, strategy="deepspeed_stage_2",
        logger=False, enable_progress_bar=False,
    )
    x = torch.randn(32, 4)
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01)
    with pytest.raises(ConfigError, match=r"sharded over 2 data-parallel rank\(s\); this fit has 1.*HINT: resume on 2 rank.*universal"):
        trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8), ckpt_path=str(checkpoint))
    assert trainer.ledger.optimizer_steps == 0 and not (tmp_path / "summary.json").exists()


def test_a_checkpoint_deepspeed_cannot_convert_is_refused_with_its_reason(deepspeed_runs, tmp_path):
    checkpoint = shutil.copytree(harness.ckpt(deepspeed_runs[(2, 2)], EPOCH0), tmp_path / "epoch=0-step=8.ckpt")
    (checkpoint / "checkpoint" / "mp_rank_00_model_states.pt").unlink()
    damage.rehash(checkpoint)  # verified, but not a checkpoint DeepSpeed can read
    with pytest.raises(ConfigError, match=r"DeepSpeed cannot convert .*epoch=0-step=8.ckpt to its universal format: .*HINT"):
        convert_to_universal(checkpoint)
    assert not universal_sibling(checkpoint).exists() and not list(tmp_path.glob(".*.partial"))
