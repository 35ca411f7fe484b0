"""The stop vote between real gloo ranks: same stop step everywhere, spaced votes, bounded latency.

Each rank's clock advances by a fixed step time per training step (no sleeping): the spacing
the ranks agree on is then a function of the step time alone, asserted exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flashdist.runtime.preemption import StopVote

SIGNAL_AT_STEP = 120
LAST_STEP = 600


class StepClock:
    """Seconds that pass only when a training step does."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _rank(rank: int, store: str, out: str, step_s: float, interval_s: float) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    clock = StepClock()
    vote = StopVote(interval_s=interval_s, clock=clock)
    spacing, stopped_at = [], None
    for step in range(1, LAST_STEP + 1):
        clock.now += step_s  # the "training step"
        signalled = rank == 1 and step >= SIGNAL_AT_STEP  # only rank 1 is told
        if vote.exchange(trainer, step, signalled):
            stopped_at = step
            break
        spacing.append(vote.every_steps)
    vote.drain()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"stopped_at": stopped_at, "spacing": spacing}))
    dist.destroy_process_group()


def _run(tmp_path: Path, step_s: float, interval_s: float) -> list[dict]:
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path), step_s, interval_s), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.multiprocess
def test_fast_steps_vote_every_few_steps_and_all_ranks_stop_together(tmp_path):
    ranks = _run(tmp_path, step_s=0.001, interval_s=0.2)
    assert ranks[0] == ranks[1], "every rank votes at the same steps and stops at the same one"
    stopped_at, spacing = ranks[0]["stopped_at"], ranks[0]["spacing"]
    # Votes double their spacing while they are under half the interval apart: 1 ms steps and
    # 0.2 s settle on 128 steps (0.128 s: not under 0.1 s, not over 0.4 s).
    assert max(spacing) == spacing[-1] == 128
    assert stopped_at is not None and stopped_at > SIGNAL_AT_STEP
    # the signal rides the next vote and is read at the one after: within two spacings
    assert stopped_at - SIGNAL_AT_STEP <= 2 * max(spacing)


@pytest.mark.multiprocess
def test_slow_steps_vote_every_step_and_stop_one_step_after_the_signal(tmp_path):
    ranks = _run(tmp_path, step_s=0.03, interval_s=0.02)
    assert ranks[0] == ranks[1]
    assert set(ranks[0]["spacing"]) == {1}
    assert ranks[0]["stopped_at"] == SIGNAL_AT_STEP + 1
