"""Checkpoints verified before loading: real files from real fits, really damaged.

The files come from the session's uninterrupted runs (2-rank DDP, 2-rank ZeRO-2, a checkpoint
after each epoch: ``epoch=0-step=8.ckpt`` and ``epoch=1-step=16.ckpt``). Detection is tested on
the files directly (fast); a few full fits check what a user sees: the fallback's warning, the
resumed LR trace, the refusal of a planted payload.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import flashdist
from flashdist import ConfigError
from flashdist.runtime.manifest import manifest_path, read_manifest
from flashdist.runtime.trust import CheckpointTrust, UnverifiedCheckpointWarning, verify
from tests.runtime import damage, harness

NEWEST, OLDER = "epoch=1-step=16.ckpt", "epoch=0-step=8.ckpt"
SHARD1 = "checkpoint/zero_pp_rank_1_mp_rank_00_optim_states.pt"
MODEL_STATES = "checkpoint/mp_rank_00_model_states.pt"


def _copy(reference, tmp_path: Path) -> Path:
    return harness.copy_run(reference.root, tmp_path / "run") / "checkpoints"


def _auto(directory: Path, rank: int = 0, world_size: int = 2) -> tuple[Path | None, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = CheckpointTrust().select_auto([directory], rank, world_size)
    return chosen, [str(w.message) for w in caught if issubclass(w.category, UnverifiedCheckpointWarning)]


# ---- the manifest ---------------------------------------------------------------------------
def test_every_checkpoint_has_a_manifest_with_each_files_size_sha256_version_and_identity(uninterrupted_2ranks, deepspeed_2ranks):
    for reference in (uninterrupted_2ranks, deepspeed_2ranks):
        for name in (OLDER, NEWEST):
            checkpoint = reference.checkpoint(name)
            manifest = read_manifest(checkpoint)
            root = checkpoint if checkpoint.is_dir() else checkpoint.parent
            on_disk = sorted(p.relative_to(root).as_posix() for p in (root.rglob("*") if checkpoint.is_dir() else [checkpoint])
                             if p.is_file() and p != manifest_path(checkpoint))
            assert sorted(manifest.files) == on_disk
            for file, entry in manifest.files.items():
                data = (root / file).read_bytes()
                assert (entry.size_bytes, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
            assert manifest.flashdist_version == flashdist.__version__
            assert manifest.global_step == int(name.split("step=")[1].split(".")[0])
            assert manifest.resume_state["identity"]["planned_total_steps"] == 16
            assert manifest.resume_state["identity"]["data_parallel_size"] == 2
    assert any("zero_pp_rank_1" in f for f in read_manifest(deepspeed_2ranks.checkpoint(NEWEST)).files)


# ---- damage, detected before unpickling -------------------------------------------------------
def _damage_ddp(checkpoint: Path, how: str) -> str:
    if how == "truncated":
        damage.truncate(checkpoint)
        return "size"
    if how == "byte flipped in a tensor":
        damage.flip_byte(checkpoint, damage.member_offset(checkpoint, "/data/0"))
        return "SHA-256 differs"
    if how == "byte flipped in the pickle":
        damage.flip_byte(checkpoint, damage.member_offset(checkpoint, "data.pkl"))
        return "SHA-256 differs"
    if how == "deleted":
        checkpoint.unlink()
        return "missing"
    if how == "manifest deleted":
        manifest_path(checkpoint).unlink()
        return "no manifest"
    raise AssertionError(how)


DDP_DAMAGE = ["truncated", "byte flipped in a tensor", "byte flipped in the pickle", "deleted", "manifest deleted"]


@pytest.mark.parametrize("how", DDP_DAMAGE)
def test_ddp_auto_skips_a_damaged_newest_checkpoint_with_one_warning_and_uses_the_older(uninterrupted_2ranks, tmp_path, how):
    directory = _copy(uninterrupted_2ranks, tmp_path)
    what = _damage_ddp(directory / NEWEST, how)
    chosen, warned = _auto(directory)
    assert chosen == directory / OLDER
    assert len(warned) == 1 and NEWEST in warned[0] and what in warned[0]


@pytest.mark.parametrize("how", DDP_DAMAGE)
def test_ddp_explicit_damaged_checkpoint_is_a_config_error_naming_file_and_mismatch(uninterrupted_2ranks, tmp_path, how):
    directory = _copy(uninterrupted_2ranks, tmp_path)
    what = _damage_ddp(directory / NEWEST, how)
    with pytest.raises(ConfigError, match=rf"{NEWEST}.*{what}.*HINT"):
        CheckpointTrust().select_explicit(directory / NEWEST, rank=0, world_size=2)


def test_auto_with_every_checkpoint_damaged_is_a_config_error_and_with_none_written_starts_fresh(uninterrupted_2ranks, tmp_path):
    directory = _copy(uninterrupted_2ranks, tmp_path)
    for name in (OLDER, NEWEST):
        damage.truncate(directory / name)
    with pytest.raises(ConfigError, match=r"none of the 2 checkpoint\(s\) of this run verifies"):
        _auto(directory)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".step=1.ckpt.partial").write_bytes(b"interrupted")  # a partial is not a checkpoint
    assert _auto(empty) == (None, [])


def _damage_deepspeed(checkpoint: Path, how: str) -> None:
    if how == "rank 1's shard deleted":
        (checkpoint / SHARD1).unlink()
    elif how == "rank 1's shard truncated":
        damage.truncate(checkpoint / SHARD1)
    elif how == "rank 1's shard byte flipped":
        damage.flip_byte(checkpoint / SHARD1, damage.member_offset(checkpoint / SHARD1, "/data/0"))
    elif how == "model states truncated":
        damage.truncate(checkpoint / MODEL_STATES)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "fails_on_ranks", "what"),
    [
        ("rank 1's shard deleted", (0, 1), "missing"),
        ("rank 1's shard truncated", (0, 1), "size"),
        ("rank 1's shard byte flipped", (1,), "SHA-256 differs"),  # same size: only its reader hashes it
        ("model states truncated", (0, 1), "size"),
    ],
)
def test_zero2_damage_is_found_by_the_ranks_that_read_the_file(deepspeed_2ranks, tmp_path, how, fails_on_ranks, what):
    directory = _copy(deepspeed_2ranks, tmp_path)
    _damage_deepspeed(directory / NEWEST, how)
    for rank in (0, 1):
        failures = verify(directory / NEWEST, rank, world_size=2)
        assert bool(failures) == (rank in fails_on_ranks), (rank, failures)
        if failures:
            assert what in str(failures[0]) and NEWEST in str(failures[0])
        chosen, warned = _auto(directory, rank)
        assert chosen == directory / (OLDER if rank in fails_on_ranks else NEWEST)
    # one process resuming it hashes every shard
    assert verify(directory / NEWEST, 0, world_size=1)
    if fails_on_ranks == (0, 1):
        with pytest.raises(ConfigError, match=rf"{NEWEST}.*{what}"):
            CheckpointTrust().select_explicit(directory / NEWEST, rank=0, world_size=2)


# ---- checkpoints without a manifest ------------------------------------------------------------
def test_a_checkpoint_without_manifest_loads_only_explicitly_with_trust_unverified_and_a_warning(uninterrupted_2ranks, tmp_path):
    directory = _copy(uninterrupted_2ranks, tmp_path)
    manifest_path(directory / NEWEST).unlink()  # as plain Lightning writes it
    with pytest.raises(ConfigError, match=r"no manifest.*HINT: Trainer\(trust_unverified_checkpoints=True\)"):
        CheckpointTrust().select_explicit(directory / NEWEST, rank=0, world_size=2)
    with pytest.warns(UnverifiedCheckpointWarning, match="without verification"):
        assert CheckpointTrust(trust_unverified=True).select_explicit(directory / NEWEST, 0, 2) == directory / NEWEST
    trust = CheckpointTrust(trust_unverified=True)
    with pytest.warns(UnverifiedCheckpointWarning, match=rf"skipping .*{NEWEST}: no manifest"):
        assert trust.select_auto([directory], 0, 2) == directory / OLDER


# ---- no code from a checkpoint runs -----------------------------------------------------------------
def _one_process_trainer(root: Path) -> flashdist.Trainer:
    return flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)


@pytest.mark.parametrize("rehashed", [False, True], ids=["manifest-stale", "manifest-rewritten"])
def test_a_payload_in_a_ddp_checkpoint_never_runs_and_the_refusal_says_what(uninterrupted_2ranks, tmp_path, rehashed):
    directory = _copy(uninterrupted_2ranks, tmp_path)
    marker = tmp_path / "payload-ran"
    damage.plant_payload(directory / NEWEST, marker)
    if rehashed:
        damage.rehash(directory / NEWEST)
    trainer = _one_process_trainer(tmp_path)
    match = r"refused to unpickle .*io.open.*weights_only=True" if rehashed else rf"{NEWEST}: size \d+ bytes, the manifest says"
    with pytest.raises(ConfigError, match=match):
        trainer.strategy.load_checkpoint(str(directory / NEWEST))
    assert not marker.exists()


# ---- full fits: what the user sees ------------------------------------------------------------


def _resume(reference, tmp_path: Path, **config):
    run = harness.copy_run(reference.root, tmp_path / "resumed")
    (run / "summary.json").unlink()
    return run


@pytest.mark.multiprocess
def test_ddp_fit_auto_falls_back_from_a_truncated_newest_and_continues_the_lr_trace(uninterrupted_2ranks, tmp_path):
    run = _resume(uninterrupted_2ranks, tmp_path)
    damage.truncate(run / "checkpoints" / NEWEST)
    proc = harness.fit(run, devices=2, checkpoint_every_n_epochs=1, ckpt_path="auto")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr.count(f"skipping {run / 'checkpoints' / NEWEST}") == 1, proc.stderr[-4000:]
    assert f"resuming from {run / 'checkpoints' / OLDER}" in proc.stderr
    assert harness.lrs(run) == uninterrupted_2ranks.lrs
    assert harness.summary(run)["resumed_from"].endswith(OLDER)


@pytest.mark.multiprocess
def test_zero2_fit_auto_agrees_on_the_older_checkpoint_when_only_rank1_sees_its_shard_damaged(deepspeed_2ranks, tmp_path):
    run = _resume(deepspeed_2ranks, tmp_path)
    _damage_deepspeed(run / "checkpoints" / NEWEST, "rank 1's shard byte flipped")
    proc = harness.fit(run, strategy="deepspeed_stage_2", devices=2, checkpoint_every_n_epochs=1, ckpt_path="auto")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{SHARD1}: SHA-256 differs" in proc.stderr
    assert f"resuming from {run / 'checkpoints' / OLDER}" in proc.stderr
    assert harness.lrs(run) == deepspeed_2ranks.lrs
    assert harness.summary(run)["resumed_from"].endswith(OLDER)


@pytest.mark.multiprocess
@pytest.mark.parametrize("file", [MODEL_STATES, SHARD1], ids=["model-states", "optimizer-shard"])
def test_a_payload_in_a_deepspeed_checkpoint_never_runs_even_with_a_rewritten_manifest(deepspeed_2ranks, tmp_path, file):
    run = _resume(deepspeed_2ranks, tmp_path)
    checkpoint = run / "checkpoints" / NEWEST
    marker = tmp_path / "payload-ran"
    damage.plant_payload(checkpoint / file, marker)
    damage.rehash(checkpoint)
    proc = harness.fit(run, strategy="deepspeed_stage_2", devices=2, ckpt_path=str(checkpoint))
    assert proc.returncode != 0
    assert "ConfigError: refused to unpickle" in proc.stderr and "io.open" in proc.stderr, proc.stderr[-4000:]
    assert not marker.exists()
    assert not (run / "summary.json").exists() or not harness.summary(run).get("optimizer_steps")
