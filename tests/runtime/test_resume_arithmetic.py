"""The pure parts of resuming, as arithmetic: identity diffs, policy decisions, sampler positions (lr.csv: test_ledger.py)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from flashdist import ConfigError
from flashdist.runtime.checkpoint import find_resume_checkpoint, is_restart
from flashdist.runtime.preemption import RequeueError, requeue_slurm_job, slurm_job_id
from flashdist.runtime.resume import ExecutingSchedule, ScheduleIdentity, batches_done_on_this_topology, decide
from flashdist.data.sampler import ResumableDistributedSampler

TWO_RANKS = ScheduleIdentity(16, 2, 16, 2, 1, "adamw()", "linear_schedule_with_warmup(num_warmup_steps=0.1)", 0.01)
ONE_RANK = replace(TWO_RANKS, planned_total_steps=32, warmup_steps=4, global_batch_size=8, data_parallel_size=1)
ARGS_16 = (("num_training_steps", 16), ("num_warmup_steps", 2))
ARGS_32 = (("num_training_steps", 32), ("num_warmup_steps", 4))
RAN_16 = ExecutingSchedule(16, ARGS_16, 16)
BUILT_32 = ExecutingSchedule(32, ARGS_32, 8)


@pytest.mark.parametrize(
    ("policy", "position", "total", "step_args", "new_position", "planned_updates"),
    [
        pytest.param("keep_schedule", 8, 16, ARGS_16, 8, 16, id="keep: saved total and warmup, in steps"),
        pytest.param("rescale", 8, 32, ARGS_32, 16, 24, id="rescale: samples kept, 8 + 16 real updates"),
        pytest.param("rescale", 5, 32, ARGS_32, 10, 27, id="rescale mid-epoch: 5 + 22 real updates"),
    ],
)
def test_decide_2_to_1_ranks(policy, position, total, step_args, new_position, planned_updates):
    decision = decide(TWO_RANKS, RAN_16, ONE_RANK, BUILT_32, policy, position)
    assert decision.schedule.total_steps == total and decision.schedule.step_args == step_args
    assert decision.position == new_position and decision.schedule.planned_updates == planned_updates
    assert decision.rebuild and decision.schedule.policy == policy


def test_decide_1_to_2_ranks_rescale_halves_steps():
    decision = decide(ONE_RANK, BUILT_32, TWO_RANKS, RAN_16, "rescale", position=16)
    assert (decision.schedule.total_steps, decision.position, decision.schedule.update_offset) == (16, 8, 8)
    assert decision.schedule.planned_updates == 24  # 16 updates at batch 8, then 8 at batch 16


def test_an_adapted_schedule_continues_on_the_next_resume_of_the_same_topology():
    adapted = decide(TWO_RANKS, RAN_16, ONE_RANK, BUILT_32, "rescale", 8).schedule
    again = decide(ONE_RANK, adapted, ONE_RANK, BUILT_32, "strict", position=20)
    assert again.changes == () and again.schedule == adapted and again.position == 20
    assert not again.rebuild  # rescale from 16 to 32 at batch 8 is what the config builds


def test_equal_identity_continues_without_rebuilding():
    decision = decide(TWO_RANKS, RAN_16, TWO_RANKS, RAN_16, "strict", 5)
    assert (decision.changes, decision.rebuild, decision.position) == ((), False, 5)


def test_strict_lists_every_change():
    with pytest.raises(ConfigError) as error:
        decide(TWO_RANKS, RAN_16, ONE_RANK, BUILT_32, "strict", 8)
    for change in ("planned_total_steps: 16 → 32", "warmup_steps: 2 → 4", "global_batch_size: 16 → 8", "data_parallel_size: 2 → 1"):
        assert change in str(error.value)
    assert "HINT:" in str(error.value)


@pytest.mark.parametrize("policy", ["strict", "keep_schedule", "rescale"])
@pytest.mark.parametrize("field", ["optimizer", "lr_scheduler", "learning_rate"])
def test_a_changed_optimizer_or_schedule_is_refused_under_every_policy(policy, field):
    changed = replace(TWO_RANKS, **{field: 0.02 if field == "learning_rate" else "other()"})
    with pytest.raises(ConfigError, match=rf"different optimizer or schedule \({field}:"):
        decide(TWO_RANKS, RAN_16, changed, RAN_16, policy, 8)


@pytest.mark.parametrize(("old_ranks", "new_ranks", "shuffle", "n"), [(2, 1, True, 128), (1, 2, True, 128), (2, 3, False, 101), (3, 2, True, 100)])
def test_resumed_sampler_deals_exactly_the_unseen_rest_of_the_epoch(old_ranks, new_ranks, shuffle, n):
    dataset, batch = range(n), 4
    old = [ResumableDistributedSampler(dataset, num_replicas=old_ranks, rank=r, shuffle=shuffle, seed=3) for r in range(old_ranks)]
    for sampler in old:
        sampler.set_epoch(1)
    batches_done = 3
    seen = [i for s in old for i in list(s)[: batches_done * batch]]
    new = [ResumableDistributedSampler(dataset, num_replicas=new_ranks, rank=r, shuffle=shuffle, seed=3) for r in range(new_ranks)]
    for sampler in new:
        sampler.set_epoch(1)
        sampler.resume_at(epoch=1, samples_done=batches_done * batch * old_ranks)
    rest = [i for s in new for i in s]
    assert sorted(set(seen) | set(rest)) == list(range(n)) and not set(seen) & set(rest)
    assert len({len(list(s)) for s in new}) == 1, "every rank gets as many samples (padded as DistributedSampler pads)"
    for sampler in new:  # only the interrupted epoch is cut
        sampler.set_epoch(2)
        assert len(list(sampler)) == len(sampler)


def test_batches_done_refuses_a_partial_batch_on_the_new_topology():
    assert batches_done_on_this_topology(96, 16) == 6
    with pytest.raises(ConfigError, match="not a whole number of batches of 16"):
        batches_done_on_this_topology(40, 16)


def test_newest_complete_checkpoint_ignores_partials(tmp_path: Path):
    (tmp_path / "step=1.ckpt").write_bytes(b"1")
    (tmp_path / "step=2.ckpt").write_bytes(b"2")
    (tmp_path / ".step=3.ckpt.partial").write_bytes(b"")
    os.utime(tmp_path / "step=1.ckpt", ns=(1, 1))
    assert find_resume_checkpoint([tmp_path, tmp_path / "missing"]).name == "step=2.ckpt"


def test_restart_detection():
    assert not is_restart({}) and not is_restart({"TORCHELASTIC_RESTART_COUNT": "0"})
    assert is_restart({"TORCHELASTIC_RESTART_COUNT": "1"}) and is_restart({"SLURM_RESTART_COUNT": "2"})


def test_failed_requeue_is_an_error_not_a_warning(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "999999999")  # no such job (or no SLURM at all): scontrol fails
    with pytest.raises(RequeueError, match=r"scontrol requeue 999999999 (failed|could not run)"):
        requeue_slurm_job()
    with pytest.raises(RequeueError, match="not a job id"):
        slurm_job_id({"SLURM_JOB_ID": "1; rm -rf /"})
