"""Lightning's ``ckpt_path`` names resolve to a file that is verified like any path (runtime/checkpoint.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

import flashdist
from flashdist import ConfigError
from flashdist.runtime.checkpoint import AtomicCheckpointIO, resolve_ckpt_path
from flashdist.runtime.trust import CheckpointTrust


def _trainer(root: Path, **kwargs) -> flashdist.Trainer:
    callbacks = [ModelCheckpoint(dirpath=root / "ckpts", save_last=True, **kwargs)]
    return flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, callbacks=callbacks)


def _save(path: Path, step: int, mtime_ns: int) -> Path:
    AtomicCheckpointIO().save_checkpoint({"global_step": step}, path)  # with its manifest
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_last_is_the_newest_last_checkpoint_and_is_verified(tmp_path):
    trainer = _trainer(tmp_path)
    _save(tmp_path / "ckpts" / "last.ckpt", 4, 1_000)
    newest = _save(tmp_path / "ckpts" / "last-v1.ckpt", 8, 2_000)
    _save(tmp_path / "ckpts" / "epoch=0-step=9.ckpt", 9, 3_000)  # newer, but not a "last"
    trust = CheckpointTrust()
    assert resolve_ckpt_path(trainer, "last", trust) == str(newest) and trust.chosen == newest
    newest.write_bytes(newest.read_bytes() + b"x")  # damaged after its manifest was written
    with pytest.raises(ConfigError, match=r"ckpt_path=.*last-v1.ckpt.* cannot be verified"):
        resolve_ckpt_path(trainer, "last", CheckpointTrust())


def test_hpc_is_the_highest_numbered_hpc_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    _save(tmp_path / "hpc_ckpt_2.ckpt", 2, 2_000)
    highest = _save(tmp_path / "hpc_ckpt_10.ckpt", 10, 1_000)
    assert resolve_ckpt_path(trainer, "hpc", CheckpointTrust()) == str(highest)


def test_hpc_is_the_newest_flashdist_preemption_checkpoint_before_any_lightning_one(tmp_path):
    # flashdist's SIGUSR1 handler (runtime/preemption.py) saves preempted-step=<N>.ckpt where
    # Lightning's would save hpc_ckpt_<N>.ckpt: "hpc" on the requeued job must find it.
    trainer = _trainer(tmp_path)
    _save(tmp_path / "hpc_ckpt_3.ckpt", 3, 3_000)  # a plain Lightning run's, in the same root
    _save(tmp_path / "ckpts" / "preempted-step=4.ckpt", 4, 1_000)
    newest = _save(tmp_path / "checkpoints" / "preempted-step=9.ckpt", 9, 2_000)
    _save(tmp_path / "ckpts" / "last.ckpt", 12, 4_000)  # newer, but not a preemption's
    trust = CheckpointTrust()
    assert resolve_ckpt_path(trainer, "hpc", trust) == str(newest) and trust.chosen == newest
    newest.write_bytes(newest.read_bytes() + b"x")  # damaged after its manifest was written: refused as a path is
    with pytest.raises(ConfigError, match=r"ckpt_path=.*preempted-step=9.ckpt.* cannot be verified"):
        resolve_ckpt_path(trainer, "hpc", CheckpointTrust())


@pytest.mark.parametrize(
    "name, searched",
    [
        ("last", r"searched last\*.ckpt in .*ckpts, .*checkpoints\..*HINT: save one with ModelCheckpoint\(save_last=True\)"),
        ("hpc", r"searched preempted-step=<N>.ckpt in .*ckpts, .*checkpoints and hpc_ckpt_<N>.ckpt in .*HINT: .*SLURM preemption"),
        ("best", r"searched the best_model_path of ModelCheckpoint \(none recorded\).*HINT"),
        ("registry", r"cannot verify a model-registry checkpoint.*HINT: download it"),
    ],
)
def test_a_name_that_finds_nothing_says_what_was_searched(tmp_path, name, searched):
    with pytest.raises(ConfigError, match=searched):
        resolve_ckpt_path(_trainer(tmp_path), name, CheckpointTrust())
