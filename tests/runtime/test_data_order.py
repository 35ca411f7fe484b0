"""Exactly once after a resume on one process: the uninterrupted run's samples, order, losses and weights, bitwise.

One recording fit (fit_reliable.py, ``record_samples``: the ids and loss of every micro-batch,
the final weights) shared by a table of cases, run as one launch of ``forked_ranks.py`` (the
imports paid once; each segment is a fresh process forked from it) in three segments:

1. the references, the shuffled one twice (bitwise reproducible), then the first case, killed;
2. (attempt 1) the first case resumed with ``ckpt_path="auto"``, then the second case, killed;
3. (attempt 2) the second case resumed.

Cases (48 samples, batch 8, 3 epochs): ``shuffle=True`` with dropout (the step draws from the
global RNG), a checkpoint every 4 steps, ``kill -9`` after step 9 (mid epoch 1; resumed at step
8); ``shuffle=False`` with ``accumulate_grad_batches=2``, a checkpoint every 2 steps, ``kill -9``
after micro-batch 11 (mid accumulation window, mid epoch 1; resumed at step 4 = micro-batch 8).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.runtime import harness

pytestmark = pytest.mark.multiprocess

FIT = {"devices": 1, "dataset_size": 48, "batch_size": 8, "max_epochs": 3, "record_samples": True}
CASES = {
    "shuffled": {**FIT, "shuffle": True, "dropout": 0.2, "checkpoint_every_n_steps": 4},
    "in_order_accumulating": {**FIT, "shuffle": False, "accumulate_grad_batches": 2, "checkpoint_every_n_steps": 2},
}
KILL = {"shuffled": 9, "in_order_accumulating": 11}  # after this micro-batch
RESUMED_AT = {"shuffled": 8, "in_order_accumulating": 8}  # micro-batches in the checkpoint "auto" finds


def _launch(workdir: Path, segments: list[list[dict]]) -> str:
    """Segment k runs its fits as attempt k, in one process forked for it."""
    return harness.forked(workdir, [{"attempt": k, "ranks": 1, "configs": configs} for k, configs in enumerate(segments)], timeout_s=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("order")
    first, second = CASES
    ref = [{**config, "root": str(w / f"ref-{name}")} for name, config in CASES.items()]
    again = {**CASES[first], "root": str(w / f"ref-{first}-again")}
    killed = {name: {**config, "root": str(w / f"killed-{name}")} for name, config in CASES.items()}
    resume = {"ckpt_path": "auto"}
    _launch(w, [
        [*ref, again, {**killed[first], "kill_after_micro_batches": {"count": KILL[first]}}],
        [{**killed[first], **resume}, {**killed[second], "kill_after_micro_batches": {"count": KILL[second], "attempt": 1}}],
        [{**killed[second], **resume}],
    ])
    return w


def _micro_batches(root: Path) -> list[dict]:
    assert not list(root.glob("error-rank*.txt")), next(root.glob("error-rank*.txt")).read_text()[-4000:]
    return [json.loads(line) for line in (root / "samples-rank0.jsonl").read_text().splitlines()]


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(next(root.glob("weights-attempt*.pt")))


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trained(records: list[dict]) -> list[tuple[int, list[int], float]]:
    return [(r["epoch"], r["ids"], r["loss"]) for r in records]


def test_the_reference_is_bitwise_reproducible_and_each_epoch_is_a_permutation(runs):
    a, b = _micro_batches(runs / "ref-shuffled"), _micro_batches(runs / "ref-shuffled-again")
    assert _trained(a) == _trained(b) and _same_weights(_weights(runs / "ref-shuffled"), _weights(runs / "ref-shuffled-again"))
    for epoch in range(3):
        ids = [i for r in a if r["epoch"] == epoch for i in r["ids"]]
        assert sorted(ids) == list(range(48)) and ids != list(range(48))  # every sample once, shuffled
    in_order = _micro_batches(runs / "ref-in_order_accumulating")
    assert [i for r in in_order for i in r["ids"]] == list(range(48)) * 3  # shuffle=False: as given


@pytest.mark.parametrize("case", CASES)
def test_a_kill_mid_epoch_resumes_with_the_uninterrupted_samples_losses_and_weights(runs, case):
    reference = _micro_batches(runs / f"ref-{case}")
    records = _micro_batches(runs / f"killed-{case}")
    killed_attempt = min(r["attempt"] for r in records)
    before = [r for r in records if r["attempt"] == killed_attempt]
    after = [r for r in records if r["attempt"] == killed_attempt + 1]
    assert len(before) == KILL[case], "killed where the case says"
    done = RESUMED_AT[case]
    assert len(reference) - len(after) == done, "resumed from the last checkpoint before the kill"
    assert _trained(before[:done]) == _trained(reference[:done])
    assert _trained(after) == _trained(reference[done:])  # the rest: same samples, order and losses, bitwise
    assert _same_weights(_weights(runs / f"killed-{case}"), _weights(runs / f"ref-{case}"))
    summary = harness.summary(runs / f"killed-{case}")
    assert summary["completed"] and summary["resumed_from"].endswith(".ckpt")
