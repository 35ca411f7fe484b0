"""The global RNG states a checkpoint carries round-trip through a real resume, on CPU and on CUDA.

Dropout draws from the generator of the device it runs on: the CPU's on CPU, the CUDA device's
on a GPU. A fit resumed mid-epoch from a step checkpoint must draw the masks the uninterrupted
fit drew, so its losses after the checkpoint are the uninterrupted fit's. The resumed fit seeds
its generators afresh first (``seed_everything``), so only a restored state gives those masks.
The CUDA case runs on a GPU host (``pytest -m gpu tests/runtime/test_rng_round_trip.py``); the
CPU case is the same test, and shows the path without CUDA writes and needs no CUDA state.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist.tasks.classification import ClassificationTask

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none")
STEPS_PER_EPOCH, CHECKPOINT_STEP = 6, 9  # 48 samples ÷ batch 8; the checkpoint is mid epoch 1


class Losses(Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(root: Path, accelerator: str, ckpt_path: str | None = None) -> list[float]:
    seed_everything(0)
    features = torch.randn(48, 8, generator=torch.Generator().manual_seed(7))
    data = DataLoader(TensorDataset(features, (features[:, 0] > 0).long()), batch_size=8, shuffle=True)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 2))
    losses = Losses()
    trainer = flashdist.Trainer(
        default_root_dir=root, accelerator=accelerator, devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[losses, ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=3, save_top_k=-1)],
    )
    trainer.fit(ClassificationTask(model, num_classes=2, learning_rate=0.01), data, ckpt_path=ckpt_path)
    return losses.losses


def _saved_rng(checkpoint: Path) -> dict:
    states = [s["rng"] for s in torch.load(checkpoint, weights_only=True)["callbacks"].values() if isinstance(s, dict) and "rng" in s]
    assert len(states) == 1, "one resume state with the RNGs in the checkpoint"
    return states[0]


@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu])])
def test_a_resume_mid_epoch_draws_the_uninterrupted_runs_dropout_masks(tmp_path, accelerator):
    reference = _fit(tmp_path / "reference", accelerator)
    checkpoint = tmp_path / "reference" / "checkpoints" / f"epoch=1-step={CHECKPOINT_STEP}.ckpt"
    saved = _saved_rng(checkpoint)
    seed_everything(0)  # what the resumed fit's generators hold before the restore
    assert not torch.equal(saved["torch"], torch.get_rng_state())
    if accelerator == "gpu":
        assert isinstance(saved["torch_cuda"], torch.Tensor) and saved["torch_cuda"].device.type == "cpu"
        assert not torch.equal(saved["torch_cuda"], torch.cuda.get_rng_state())  # the device's generator moved on
    else:
        assert "torch_cuda" not in saved  # no CUDA state written, none needed to resume

    resumed = _fit(tmp_path / "resumed", accelerator, ckpt_path=str(checkpoint))
    assert len(reference) == 2 * STEPS_PER_EPOCH and len(resumed) == 2 * STEPS_PER_EPOCH - CHECKPOINT_STEP
    if accelerator == "cpu":
        assert resumed == reference[CHECKPOINT_STEP:]  # bitwise: the CPU reference is reproducible bit for bit
    else:  # cuBLAS may sum in another order from one launch to the next; without the restore a loss moved by 5e-4 (measured on CPU)
        assert resumed == pytest.approx(reference[CHECKPOINT_STEP:], rel=0, abs=1e-6)
