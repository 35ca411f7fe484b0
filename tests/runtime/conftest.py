"""Uninterrupted reference runs, fitted once per session and shared by the reliability tests.

The tiny fit: 128 samples, batch 8, 2 epochs, AdamW lr 0.01, HF linear warmup (10 %) to zero.
2 ranks: 8 steps/epoch, 16 in all, warmup 2. 1 rank: 16 steps/epoch, 32 in all, warmup 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.runtime import harness


@dataclass(frozen=True)
class Reference:
    root: Path
    lrs: list[float]
    summary: dict

    def checkpoint(self, pattern: str) -> Path:
        return harness.ckpt(self.root, pattern)


def _reference(tmp_path_factory: pytest.TempPathFactory, name: str, devices: int) -> Reference:
    root = tmp_path_factory.mktemp(name)
    summary = harness.fit_ok(root, devices=devices, checkpoint_every_n_epochs=1)
    return Reference(root, harness.lrs(root), summary)


@pytest.fixture(scope="session")
def uninterrupted_2ranks(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return _reference(tmp_path_factory, "uninterrupted2", devices=2)


@pytest.fixture(scope="session")
def uninterrupted_1rank(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return _reference(tmp_path_factory, "uninterrupted1", devices=1)


@pytest.fixture(scope="session")
def deepspeed_2ranks(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """ZeRO-2 on 2 CPU processes, a checkpoint (a directory of shards) after each epoch."""
    root = tmp_path_factory.mktemp("deepspeed2")
    summary = harness.fit_ok(root, strategy="deepspeed_stage_2", devices=2, checkpoint_every_n_epochs=1)
    return Reference(root, harness.lrs(root), summary)
