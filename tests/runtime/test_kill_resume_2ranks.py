"""Exactly once after a ``kill -9`` on 2 ranks: ZeRO-1/2/3, FSDP2, and DDP in the middle of an
accumulation window, killed mid-epoch, resume with the uninterrupted run's samples, order, losses
and weights, bitwise.

One recording fit (fit_reliable.py, ``record_samples``: each rank's ids and loss of every
micro-batch, and at the end the part of the weights it holds) shared by a table of cases, run as
one launch of ``forked_ranks.py`` (the imports paid once; each segment forks 2 fresh ranks with
their own gloo group):

0. every case's reference, each twice (bitwise reproducible), then the first case, killed;
1. (attempt 1) the first case resumed with ``ckpt_path="auto"``, then the second case, killed;
… and so on; the last segment resumes the last case.

Each case: 64 samples, ``shuffle=True`` (the run's seed draws each epoch's order), a dropout layer
(the steps draw from the global RNG), batch 8 per rank (4 micro-batches per epoch and rank), 3
epochs; rank 0 kills itself (SIGKILL) after its 7th micro-batch, mid epoch 1, and the group goes
down with it; "auto" resumes from the checkpoint after micro-batch 6, also mid epoch 1. The sharded
strategies checkpoint every 2 steps (no accumulation: micro-batch 6 = step 6); DDP accumulates 2
micro-batches per step and checkpoints every step, so the kill falls inside the window of step 4
(micro-batches 7-8) and the resume is from step 3. The ``stateful_*`` cases repeat the DDP (with 2
loader workers) and FSDP2 cases with torchdata's ``StatefulDataLoader`` (map-style, ``shuffle=True``):
there the position is the loader's own state, which Lightning checkpoints and torchdata fast-forwards
over flashdist's sampler; their order is the plain ``DataLoader``'s.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.runtime import harness

pytestmark = pytest.mark.multiprocess

DATASET, EPOCHS, MICRO_BATCHES_PER_EPOCH = 64, 3, 4  # per rank: 64 samples ÷ (2 ranks × batch 8)
FIT = {"devices": 2, "dataset_size": DATASET, "batch_size": 8, "max_epochs": EPOCHS, "shuffle": True, "dropout": 0.1,
       "record_samples": True}
SHARDED = {"checkpoint_every_n_steps": 2}
CASES = {
    "zero1": {**SHARDED, "strategy": "deepspeed_stage_1"},
    "zero2": {**SHARDED, "strategy": "deepspeed_stage_2"},
    "zero3": {**SHARDED, "strategy": "deepspeed_stage_3"},
    "fsdp2": {**SHARDED, "strategy": "fsdp"},
    "ddp_accumulating": {"strategy": "ddp", "accumulate_grad_batches": 2, "checkpoint_every_n_steps": 1},
}
# torchdata's StatefulDataLoader (map-style, shuffle=True), whose position is its own state that Lightning
# saves: the case of the plain DataLoader beside it, otherwise the same (its order included)
STATEFUL = {"stateful_ddp_2_workers": ("ddp_accumulating", {"num_workers": 2}), "stateful_fsdp2": ("fsdp2", {})}
CASES.update({name: {**CASES[plain], **extra, "stateful_loader": True} for name, (plain, extra) in STATEFUL.items()})
KILL_AFTER = 7  # rank 0's micro-batches: mid epoch 1 (micro-batches 5-8)
RESUMED_AT = 6  # micro-batches in the last checkpoint before the kill, which "auto" finds


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("kill2")
    config = {name: {**FIT, **case} for name, case in CASES.items()}
    references = [{**config[name], "root": str(w / f"ref-{name}{again}")} for again in ("", "-again") for name in CASES]
    killed = [{**config[name], "root": str(w / f"killed-{name}")} for name in CASES]
    segments = [{"attempt": 0, "configs": references}]
    for attempt, case in enumerate(killed):
        segments[-1]["configs"].append({**case, "kill_after_micro_batches": {"count": KILL_AFTER, "attempt": attempt}})
        segments.append({"attempt": attempt + 1, "configs": [{**case, "ckpt_path": "auto"}]})
    harness.forked(w, segments)
    return w


def _records(root: Path, rank: int, killed_attempt: int | None = None) -> list[dict]:
    # A rank that outlived the kill may fail in its next collective (its peer is gone) before
    # forked_ranks takes it down too: that attempt's error is the kill's; any other fails the test.
    errors = [e for e in sorted(root.glob("error-rank*.txt")) if e.read_text().split("\n", 1)[0] != f"attempt {killed_attempt}"]
    assert not errors, errors[0].read_text()[-4000:]
    return [json.loads(line) for line in (root / f"samples-rank{rank}.jsonl").read_text().splitlines()]


def _trained(records: list[dict]) -> list[tuple[int, int, list[int], float]]:
    return [(r["epoch"], r["step"], r["ids"], r["loss"]) for r in records]


def _weights(root: Path, rank: int) -> dict[str, torch.Tensor]:
    """The part of the weights ``rank`` holds at the end (DDP: rank 0 writes the whole, which every rank holds)."""
    found = sorted(root.glob(f"weights-rank{rank}-attempt*.pt")) or sorted(root.glob("weights-attempt*.pt"))
    assert len(found) == 1, found
    return torch.load(found[0])


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", CASES)
def test_the_reference_is_bitwise_reproducible_and_each_epoch_a_permutation(runs, case):
    a, b = runs / f"ref-{case}", runs / f"ref-{case}-again"
    for rank in (0, 1):
        assert _trained(_records(a, rank)) == _trained(_records(b, rank))
        assert _same_weights(_weights(a, rank), _weights(b, rank))
    for epoch in range(EPOCHS):
        ids = [i for rank in (0, 1) for r in _records(a, rank) if r["epoch"] == epoch for i in r["ids"]]
        assert sorted(ids) == list(range(DATASET)) and ids != sorted(ids)  # every sample once, shuffled


@pytest.mark.parametrize("case", STATEFUL)
def test_a_stateful_dataloader_on_2_ranks_reads_the_order_a_dataloader_reads(runs, case):
    # StatefulDataLoader(shuffle=True) brings its own RandomSampler: split as DataLoader(shuffle=True)'s (the run's
    # seed and the epoch), not drawn per epoch from a generator each rank seeds from its own global RNG
    plain = STATEFUL[case][0]
    for rank in (0, 1):
        stateful = [(r["epoch"], r["ids"]) for r in _records(runs / f"ref-{case}", rank)]
        assert stateful == [(r["epoch"], r["ids"]) for r in _records(runs / f"ref-{plain}", rank)]


@pytest.mark.parametrize("case", CASES)
def test_a_kill_mid_epoch_resumes_with_the_uninterrupted_samples_losses_and_weights(runs, case):
    reference, root = runs / f"ref-{case}", runs / f"killed-{case}"
    killed_attempt = list(CASES).index(case)
    kept = []  # the micro-batches whose updates survive: the checkpoint's, then the resumed run's
    for rank in (0, 1):
        records = _records(root, rank, killed_attempt)
        before = [r for r in records if r["attempt"] == killed_attempt]
        after = [r for r in records if r["attempt"] == killed_attempt + 1]
        expected = _trained(_records(reference, rank))
        if rank == 0:
            assert len(before) == KILL_AFTER, "killed where the case says"
        assert _trained(before[:RESUMED_AT]) == expected[:RESUMED_AT]
        assert _trained(after) == expected[RESUMED_AT:]  # the rest: same samples, order and losses, bitwise
        assert _same_weights(_weights(root, rank), _weights(reference, rank))
        kept += before[:RESUMED_AT] + after
    # the kill was mid-epoch, and so was the checkpoint "auto" resumed from
    assert (KILL_AFTER % MICRO_BATCHES_PER_EPOCH, RESUMED_AT % MICRO_BATCHES_PER_EPOCH) == (3, 2)
    for epoch in range(EPOCHS):
        assert Counter(i for r in kept if r["epoch"] == epoch for i in r["ids"]) == Counter(range(DATASET))
    summary = harness.summary(root)
    assert summary["completed"] and Path(summary["resumed_from"]).parent == root / "checkpoints"
    accumulation = CASES[case].get("accumulate_grad_batches", 1)
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == EPOCHS * MICRO_BATCHES_PER_EPOCH // accumulation
    # every LR and every update's grad norm (lr.csv's columns), as uninterrupted
    assert (root / "lr.csv").read_text() == (reference / "lr.csv").read_text()
