"""Resume on another number of ranks: DeepSpeed ZeRO-1/2/3 (universal conversion) and FSDP2 (DCP),
2 → 1 and 1 → 2 ranks, under each adapting policy, with the LR trace the policy promises.

Real checkpoints of real fits, run for CI time as three launches of ``fit_sequence.py`` (the
imports, the process start and the process group paid once per launch, not once per fit):

1. one process: each strategy's fit on 1 rank, a checkpoint after epoch 0;
2. ``torchrun`` of 2: each strategy's fit on 2 ranks, and every 1-rank checkpoint resumed on 2
   ranks under ``keep_schedule``, ``rescale`` and ``keep_global_batch``;
3. one process: every 2-rank checkpoint resumed on 1 rank under the three policies (and DDP's
   under ``keep_global_batch``).

The three resumes of a checkpoint share it (and its one universal conversion). Every expected LR
is computed here from the schedule's formula (HF's linear warmup to zero) and the policy's
promise, not read from a reference run or from flashdist.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.runtime.manifest import manifest_path, read_manifest
from flashdist.runtime.reshard import convert_to_universal, sharded_dp_size, universal_sibling
from flashdist.runtime.trust import verify
from flashdist.tasks.classification import ClassificationTask
from tests.runtime import damage, harness

pytestmark = pytest.mark.multiprocess

SEQUENCE = Path(__file__).parent / "fit_sequence.py"
STRATEGIES = ("deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp")
POLICIES = ("keep_schedule", "rescale", "keep_global_batch")
DIRECTIONS = ((2, 1), (1, 2))  # (saved on, resumed on) ranks
# 64 samples, batch 8 per rank, 2 epochs, AdamW lr 0.01, linear warmup over 25 % (rounded up) to zero.
DATASET, BATCH, EPOCHS, LR, WARMUP_FRACTION = 64, 8, 2, 0.01, 0.25
FIT = {"dataset_size": DATASET, "batch_size": BATCH, "max_epochs": EPOCHS, "learning_rate": LR,
       "lr_scheduler": ["linear_schedule_with_warmup", {"num_warmup_steps": WARMUP_FRACTION}], "record_samples": True}


# ---- the arithmetic ---------------------------------------------------------------------------
def steps_per_epoch(ranks: int, batch: int = BATCH, accumulation: int = 1) -> int:
    return DATASET // (ranks * batch * accumulation)


def linear_warmup_lr(update: int, total: int, warmup: int) -> float:
    """The LR of optimizer update ``update`` (1-based): HF's get_linear_schedule_with_warmup at
    scheduler position update − 1."""
    t = update - 1
    return LR * (t / warmup if t < warmup else max(0.0, (total - t) / (total - warmup)))


def saved_schedule(ranks: int) -> tuple[int, int, int]:
    """(total, warmup, checkpoint step) of the fit on ``ranks`` ranks; its checkpoint is after epoch 0."""
    total = steps_per_epoch(ranks) * EPOCHS
    return total, math.ceil(WARMUP_FRACTION * total), steps_per_epoch(ranks)


def expected_lrs(saved_ranks: int, ranks: int, policy: str) -> list[float]:
    """Every LR of the resumed run, lr.csv's first rows (from the saved run) included."""
    total, warmup, at = saved_schedule(saved_ranks)
    head = [linear_warmup_lr(u, total, warmup) for u in range(1, at + 1)]
    if policy == "rescale":
        # The same LR per sample seen: the schedule in steps of the new global batch.
        ratio = ranks / saved_ranks  # samples per update, new ÷ saved (the batch per rank is kept)
        new_total, new_warmup, new_at = int(total / ratio), int(warmup / ratio), int(at / ratio)
        return head + [linear_warmup_lr(u, new_total, new_warmup) for u in range(new_at + 1, new_total + 1)]
    # keep_schedule: the saved steps, one for one; keep_global_batch: the same, with the saved batch.
    return head + [linear_warmup_lr(u, total, warmup) for u in range(at + 1, total + 1)]


def test_the_arithmetic_matches_the_policies_worked_by_hand():
    # 2 ranks: 4 steps/epoch, 8 in all, warmup 2, checkpoint at 4; 1 rank: 8/epoch, 16, 4, 8.
    assert saved_schedule(2) == (8, 2, 4) and saved_schedule(1) == (16, 4, 8)
    assert [lr / LR for lr in expected_lrs(2, 1, "keep_schedule")] == pytest.approx([0, 0.5, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    # rescale 2 → 1: at step 4 (64 samples) the 1-rank schedule (16 steps, warmup 4) is at 8.
    rescaled = expected_lrs(2, 1, "rescale")
    assert len(rescaled) == 4 + 8 and rescaled[4] == pytest.approx(LR * 8 / 12)
    assert len(expected_lrs(1, 2, "rescale")) == 8 + 4 and expected_lrs(1, 2, "rescale")[8] == pytest.approx(LR * 4 / 6)


# ---- the fits ---------------------------------------------------------------------------------
def _launch(configs: list[dict], ranks: int, workdir: Path, name: str, max_restarts: int = 0) -> str:
    spec = workdir / f"{name}.json"
    spec.write_text(json.dumps(configs))
    env = harness._env()
    if ranks == 1:
        cmd = [sys.executable, str(SEQUENCE), str(spec)]
    else:
        cmd = [str(harness.TORCHRUN), "--nproc-per-node", str(ranks), "--rdzv-backend", "c10d", "--max-restarts",
               str(max_restarts), "--monitor-interval", "0.5", "--rdzv-endpoint", f"127.0.0.1:{harness.free_port()}",
               str(SEQUENCE), str(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=harness.REPO)
    (workdir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    return proc.stdout + proc.stderr


def _save_root(workdir: Path, strategy: str, ranks: int) -> Path:
    return workdir / "saved" / f"{strategy}-{ranks}ranks"


def _resume_root(workdir: Path, strategy: str, saved: int, ranks: int, policy: str) -> Path:
    return workdir / "resumed" / f"{strategy}-{saved}to{ranks}-{policy}"


def _checkpoint(workdir: Path, strategy: str, ranks: int) -> Path:
    return _save_root(workdir, strategy, ranks) / "checkpoints" / f"epoch=0-step={saved_schedule(ranks)[2]}.ckpt"


def _resumes(workdir: Path, saved: int, ranks: int) -> list[dict]:
    configs = []
    for strategy in STRATEGIES:
        source = _save_root(workdir, strategy, saved)
        for policy in POLICIES:
            root = _resume_root(workdir, strategy, saved, ranks, policy)
            root.mkdir(parents=True)
            if (source / "lr.csv").exists():
                shutil.copy(source / "lr.csv", root / "lr.csv")  # the run's history; the resume cuts it back to its step
            config = {**FIT, "root": str(root), "strategy": strategy, "devices": ranks, "resume_policy": policy,
                      "ckpt_path": str(_checkpoint(workdir, strategy, saved))}
            if policy == "keep_global_batch" and ranks > saved:
                config["batch_size"] = BATCH * saved // ranks  # the saved global batch of 8 on 2 ranks: 4 each
            configs.append(config)
    return configs


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("reshard")
    saves = {ranks: [{**FIT, "root": str(_save_root(workdir, s, ranks)), "strategy": s, "devices": ranks,
                      "checkpoint_every_n_epochs": 1} for s in STRATEGIES] for ranks in (1, 2)}
    ddp_save = {**FIT, "root": str(_save_root(workdir, "ddp", 2)), "strategy": "ddp", "devices": 2, "checkpoint_every_n_epochs": 1}
    # FSDP2 with asynchronous checkpoints (torch DCP's async_save), then a 2-rank resume from its epoch-0 one.
    fsdp_async = {**FIT, "root": str(workdir / "async" / "fsdp-2ranks"), "strategy": "fsdp", "devices": 2,
                  "checkpoint_every_n_epochs": 1, "async_checkpoint": True}
    fsdp_async_resume = {**fsdp_async, "root": str(workdir / "async" / "fsdp-resumed"), "checkpoint_every_n_epochs": None,
                         "ckpt_path": str(workdir / "async" / "fsdp-2ranks" / "checkpoints" / "epoch=0-step=4.ckpt")}
    # Last in the launch: FSDP2, asynchronous, rank 0 SIGKILLed while step 6's save is written in the
    # background (held there by an event until training went on); torchrun restarts the launch, which
    # skips the completed fits and auto-resumes this one.
    fsdp_killed = {**FIT, "root": str(workdir / "async" / "fsdp-killed"), "strategy": "fsdp", "devices": 2,
                   "checkpoint_every_n_steps": 3, "async_checkpoint": True, "kill_in_save_at_step": {"step": 6, "rank": 0}}
    logs = {"one": _launch(saves[1], 1, workdir, "one-rank-saves")}
    two_ranks = saves[2] + [ddp_save, fsdp_async, fsdp_async_resume] + _resumes(workdir, saved=1, ranks=2) + [fsdp_killed]
    logs["two"] = _launch(two_ranks, 2, workdir, "two-ranks", max_restarts=1)
    # DDP 2 → 1 rank under keep_global_batch (the accumulation doubles), with the other 2 → 1 resumes.
    ddp = _resume_root(workdir, "ddp", 2, 1, "keep_global_batch")
    ddp.mkdir(parents=True)
    shutil.copy(_save_root(workdir, "ddp", 2) / "lr.csv", ddp / "lr.csv")
    ddp_resume = {**FIT, "root": str(ddp), "devices": 1, "resume_policy": "keep_global_batch",
                  "ckpt_path": str(_checkpoint(workdir, "ddp", 2))}
    # ZeRO-2 2 → 1 rank under keep_schedule with Lightning's ckpt_path="last": found, verified, converted.
    last = workdir / "resumed" / "deepspeed_stage_2-last"
    shutil.copytree(_checkpoint(workdir, "deepspeed_stage_2", 2), last / "checkpoints" / "last.ckpt")
    shutil.copy(_save_root(workdir, "deepspeed_stage_2", 2) / "lr.csv", last / "lr.csv")
    last_resume = {**FIT, "root": str(last), "strategy": "deepspeed_stage_2", "devices": 1, "resume_policy": "keep_schedule",
                   "ckpt_path": "last"}
    logs["one-resumes"] = _launch(_resumes(workdir, saved=2, ranks=1) + [ddp_resume, last_resume], 1, workdir, "one-rank-resumes")
    return {"workdir": workdir, "logs": logs, "ddp": ddp, "last": last}


def _finished(root: Path, log: str) -> dict:
    errors = sorted(root.glob("error-rank*.txt"))
    assert not errors, errors[0].read_text()[-4000:]
    assert (root / "summary.json").exists(), f"{root.name} wrote no summary:\n{log[-6000:]}"
    return harness.summary(root)


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_saved_run_follows_the_schedule_and_writes_a_verified_sharded_checkpoint(matrix, strategy, ranks):
    workdir = matrix["workdir"]
    summary = _finished(_save_root(workdir, strategy, ranks), matrix["logs"]["one" if ranks == 1 else "two"])
    total, warmup, _ = saved_schedule(ranks)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == total and summary["completed"]
    assert harness.lrs(_save_root(workdir, strategy, ranks)) == pytest.approx(
        [linear_warmup_lr(u, total, warmup) for u in range(1, total + 1)], rel=1e-6, abs=1e-12)
    checkpoint = _checkpoint(workdir, strategy, ranks)
    manifest = read_manifest(checkpoint)
    assert manifest is not None and manifest.global_step == saved_schedule(ranks)[2]
    if strategy == "fsdp":
        assert any(name.endswith(".distcp") for name in manifest.files)  # torch DCP shards
    else:
        assert sharded_dp_size(checkpoint) == ranks


def test_fsdp2_async_checkpoint_is_verified_and_resuming_from_it_equals_the_uninterrupted_run(matrix):
    workdir, log = matrix["workdir"], matrix["logs"]["two"]
    synchronous, saved, resumed = _save_root(workdir, "fsdp", 2), workdir / "async" / "fsdp-2ranks", workdir / "async" / "fsdp-resumed"
    assert _finished(saved, log)["completed"] and _finished(resumed, log)["completed"]
    rows = (synchronous / "lr.csv").read_text().splitlines()  # step, lr, grad_norm: the norms follow the weights
    assert (saved / "lr.csv").read_text().splitlines() == rows  # saving in the background changed no step
    checkpoint = saved / "checkpoints" / "epoch=0-step=4.ckpt"
    assert verify(checkpoint) == [] and not list((saved / "checkpoints").glob(".*"))
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "meta.pt"} <= set(read_manifest(checkpoint).files)
    assert (resumed / "lr.csv").read_text().splitlines() == [rows[0], *rows[5:]]  # steps 5-8, bit for bit


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("saved", "ranks"), DIRECTIONS, ids=["2to1", "1to2"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_resume_on_another_rank_count_follows_the_policys_lr_trace(matrix, strategy, saved, ranks, policy):
    workdir = matrix["workdir"]
    root = _resume_root(workdir, strategy, saved, ranks, policy)
    log = matrix["logs"]["two" if ranks == 2 else "one-resumes"]
    summary = _finished(root, log)
    lrs = expected_lrs(saved, ranks, policy)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == len(lrs) and summary["completed"]
    assert summary["resume_adapted_by"] == policy and summary["data_parallel_size"] == ranks
    assert summary["resumed_from"] == str(_checkpoint(workdir, strategy, saved))
    # keep_global_batch keeps micro × accumulation × ranks as saved; the others keep the batch per rank.
    saved_global_batch = BATCH * saved
    assert summary["global_batch_size"] == (saved_global_batch if policy == "keep_global_batch" else BATCH * ranks)
    assert summary["accumulate_grad_batches"] == (2 if policy == "keep_global_batch" and ranks < saved else 1)
    assert harness.lrs(root) == pytest.approx(lrs, rel=1e-6, abs=1e-12)
    if strategy != "fsdp":  # DeepSpeed: converted once to the universal format, shared by the three policies
        checkpoint = _checkpoint(workdir, strategy, saved)
        universal = universal_sibling(checkpoint)
        assert log.count(f"converted {checkpoint} to DeepSpeed's universal format: {universal}") == 1
        assert manifest_path(universal).exists() and verify(universal) == []


def test_ddp_2_to_1_rank_with_keep_global_batch_doubles_accumulation_and_keeps_every_lr(matrix):
    log = matrix["logs"]["one-resumes"]
    summary = _finished(matrix["ddp"], log)
    assert "accumulate_grad_batches 1 → 2 (global batch 16 = 8 × 2 × 1 ranks; saved on 2)" in log
    assert harness.lrs(matrix["ddp"]) == pytest.approx(expected_lrs(2, 1, "keep_global_batch"), rel=1e-9)
    assert summary["optimizer_steps"] == 8 and summary["resume_adapted_by"] == "keep_global_batch"
    assert (summary["global_batch_size"], summary["accumulate_grad_batches"]) == (16, 2)


@pytest.mark.parametrize("strategy", (*STRATEGIES, "ddp"))
def test_shuffle_false_keeps_its_order_on_2_ranks_under_every_strategy(matrix, strategy):
    # DataLoader(shuffle=False): rank r reads r, r + 2, r + 4, ... (Lightning's own injection shuffles).
    root = _save_root(matrix["workdir"], strategy, 2)
    _finished(root, matrix["logs"]["two"])
    assert re.search(r"data order\s+as given", matrix["logs"]["two"])
    for rank in (0, 1):
        epochs = _records_by_epoch(root / f"samples-rank{rank}.jsonl")
        assert epochs == {0: list(range(rank, DATASET, 2)), 1: list(range(rank, DATASET, 2))}


@pytest.mark.parametrize("strategy", (*STRATEGIES, "ddp"))
def test_keep_global_batch_2_to_1_trains_each_step_on_the_uninterrupted_runs_samples(matrix, strategy):
    workdir = matrix["workdir"]
    saved = _save_root(workdir, strategy, 2)
    resumed = matrix["ddp"] if strategy == "ddp" else _resume_root(workdir, strategy, 2, 1, "keep_global_batch")
    _finished(resumed, matrix["logs"]["one-resumes"])
    per_step = {}  # the uninterrupted run's step → the samples of both ranks
    for rank in (0, 1):
        for record in _records(saved / f"samples-rank{rank}.jsonl"):
            per_step.setdefault(record["step"], set()).update(record["ids"])
    micro = _records(resumed / "samples-rank0.jsonl")  # 2 micro-batches per step now
    steps = [set(micro[i]["ids"]) | set(micro[i + 1]["ids"]) for i in range(0, len(micro), 2)]
    at = saved_schedule(2)[2]
    assert steps == [per_step[step] for step in range(at + 1, saved_schedule(2)[0] + 1)]
    if strategy == "ddp":  # the same updates, summed in another order: equal to float32 rounding
        a, b = torch.load(saved / "weights-attempt0.pt"), torch.load(resumed / "weights-attempt0.pt")
        assert all(torch.allclose(a[name], b[name], rtol=0, atol=1e-6) for name in a)


def test_ckpt_path_last_resumes_zero2_on_another_dp_size_through_the_universal_conversion(matrix):
    log, root = matrix["logs"]["one-resumes"], matrix["last"]
    summary = _finished(root, log)
    assert f"ckpt_path='last': resuming from {root / 'checkpoints' / 'last.ckpt'}" in log
    assert f"converted {root / 'checkpoints' / 'last.ckpt'} to DeepSpeed's universal format" in log
    assert summary["resume_adapted_by"] == "keep_schedule" and summary["completed"]
    assert harness.lrs(root) == pytest.approx(expected_lrs(2, 1, "keep_schedule"), rel=1e-6, abs=1e-12)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _records_by_epoch(path: Path) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for record in _records(path):
        out.setdefault(record["epoch"], []).extend(record["ids"])
    return out


# ---- refusals, before any process starts ----------------------------------------------------------
def _in_process_fit(root: Path, devices: int, strategy: str, checkpoint: Path, policy: str = "strict", batch: int = BATCH):
    trainer = flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=devices, strategy=strategy,
                                logger=False, enable_progress_bar=False, resume_policy=policy)
    x = torch.randn(DATASET, 4)
    task = ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=LR)
    try:
        trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=batch), ckpt_path=str(checkpoint))
    finally:
        assert trainer.ledger.optimizer_steps == 0 and not (root / "summary.json").exists()


def test_strict_refuses_another_data_parallel_size_before_any_process_starts(matrix, tmp_path):
    checkpoint = _checkpoint(matrix["workdir"], "deepspeed_stage_2", 2)
    with pytest.raises(ConfigError, match=r"sharded over 2 data-parallel rank\(s\); this fit has 1.*HINT: resume on 2 rank.*universal"):
        _in_process_fit(tmp_path, 1, "deepspeed_stage_2", checkpoint)


def test_keep_global_batch_that_cannot_be_kept_is_refused_before_launch_listing_settings(matrix, tmp_path):
    # The 1-rank global batch of 8 on 2 ranks of batch 8: no accumulation fits; 2 ranks of 4 would.
    checkpoint = _checkpoint(matrix["workdir"], "deepspeed_stage_2", 1)
    with pytest.raises(ConfigError, match=r"cannot keep the saved global batch of 8 samples on 2 data-parallel rank\(s\) with batch_size=8") as error:
        _in_process_fit(tmp_path, 2, "deepspeed_stage_2", checkpoint, policy="keep_global_batch")
    assert "(devices × nodes = 1, accumulate_grad_batches=1, batch_size=8)" in str(error.value)
    assert "(devices × nodes = 2, accumulate_grad_batches=1, batch_size=4)" in str(error.value)


def test_a_checkpoint_deepspeed_cannot_convert_is_refused_with_its_reason(matrix, tmp_path):
    checkpoint = shutil.copytree(_checkpoint(matrix["workdir"], "deepspeed_stage_2", 2), tmp_path / "epoch=0-step=4.ckpt")
    (checkpoint / "checkpoint" / "mp_rank_00_model_states.pt").unlink()
    damage.rehash(checkpoint)  # verified, but not a checkpoint DeepSpeed can read
    with pytest.raises(ConfigError, match=r"DeepSpeed cannot convert .*epoch=0-step=4.ckpt to its universal format: .*HINT"):
        convert_to_universal(checkpoint)
    assert not universal_sibling(checkpoint).exists() and not list(tmp_path.glob(".*.partial"))


def test_kill9_during_an_async_fsdp2_save_keeps_the_previous_checkpoint_and_auto_resume_is_exact(matrix):
    workdir, log = matrix["workdir"], matrix["logs"]["two"]
    killed = workdir / "async" / "fsdp-killed"
    # The kill really happened, inside step 6's background save, once training had gone on past it: the
    # writer waits for that event before it kills (it raises instead, with no -9, if training never went on).
    # Whether rank 0 also printed "last.ckpt waits for epoch=1-step=6.ckpt" first is a race with the kill.
    assert "exitcode: -9" in log and "local_rank: 0" in log
    assert re.search(r"restart: resuming from \S*fsdp-killed/checkpoints/last\.ckpt "
                     r"\(ignoring incomplete: \.epoch=1-step=6\.ckpt\.partial\)", log), log[-6000:]
    # Rank 1 may outlive rank 0 long enough to fail too: its save in flight lost its peer mid-collective,
    # and it says so on its training thread at the next save, before torchrun restarts the launch.
    for error in killed.glob("error-rank*.txt"):
        assert error.name == "error-rank1.txt" and "a background checkpoint save failed" in error.read_text(), error.read_text()[-3000:]
    summary = harness.summary(killed)
    assert summary["completed"] and summary["resumed_from"].endswith("last.ckpt") and summary["optimizer_steps"] == summary["planned_total_steps"] == 8
    records = harness.samples(killed)
    assert min(r["step"] for r in records if r["attempt"] > 0) == 4, "resumed after step 3, the last complete checkpoint"
    # every LR and every update's grad norm equal the uninterrupted synchronous run's: the resumed shards are exact
    assert (killed / "lr.csv").read_text() == (_save_root(workdir, "fsdp", 2) / "lr.csv").read_text()
    checkpoints = killed / "checkpoints"
    assert verify(checkpoints / "last.ckpt") == [] and not list(checkpoints.glob(".*partial"))
