"""``resume_policy="keep_global_batch"`` as arithmetic: the accumulation, the refusal, the decision.

Real fits under it (DDP 2 → 1; ZeRO-1/2/3 and FSDP2 2 → 1 and 1 → 2; an infeasible batch refused
before launch) are in tests/runtime/test_resharded_resume.py, run in one sequence with the other policies.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from flashdist import ConfigError
from flashdist.runtime.global_batch import accumulation_for, feasible_settings, saved_batch
from flashdist.runtime.resume import ExecutingSchedule, ScheduleIdentity, decide


@pytest.mark.parametrize(
    ("global_batch", "dp", "micro", "accumulation"),
    [
        (16, 2, 8, 1),  # as saved
        (16, 1, 8, 2),  # 2 → 1 ranks: twice the accumulation
        (32, 2, 8, 2),  # saved on 4 ranks with accumulation 1
        (48, 3, 4, 4),
        (64, 8, 2, 4),
        (16, 16, 1, 1),
        (12, 1, 12, 1),
    ],
)
def test_accumulation_keeps_micro_times_accumulation_times_ranks_equal_to_the_saved_global_batch(global_batch, dp, micro, accumulation):
    assert accumulation_for(global_batch, dp, micro) == accumulation
    assert micro * accumulation * dp == global_batch


@pytest.mark.parametrize(
    ("global_batch", "dp", "micro", "listed"),
    [
        # 16 samples on 3 ranks of 8: keep batch 8 on 2 or 1 ranks (16 % 3 != 0: no micro-batch fits 3 ranks)
        (16, 3, 8, ["(devices × nodes = 2, accumulate_grad_batches=1, batch_size=8)",
                    "(devices × nodes = 1, accumulate_grad_batches=2, batch_size=8)"]),
        # 16 on 4 ranks of 8 (more ranks than the batch allows): batch 4 on 4 ranks, or 8 on 2
        (16, 4, 8, ["(devices × nodes = 2, accumulate_grad_batches=1, batch_size=8)",
                    "(devices × nodes = 4, accumulate_grad_batches=1, batch_size=4)"]),
        # 24 on 1 rank of 16: batch 12 × 2, 8 × 3, 24 × 1 on 1 rank
        (24, 1, 16, ["(devices × nodes = 1, accumulate_grad_batches=2, batch_size=12)",
                     "(devices × nodes = 1, accumulate_grad_batches=1, batch_size=24)"]),
    ],
)
def test_an_infeasible_global_batch_is_refused_listing_the_nearest_feasible_settings(global_batch, dp, micro, listed):
    with pytest.raises(ConfigError, match=rf"global batch of {global_batch} samples on {dp} data-parallel") as error:
        accumulation_for(global_batch, dp, micro)
    for setting in listed:
        assert setting in str(error.value)
    for setting in feasible_settings(global_batch, dp, micro):
        assert setting.data_parallel_size * setting.accumulate_grad_batches * setting.micro_batch_size == global_batch


def test_saved_batch_reads_the_identity_a_manifest_carries():
    identity = {"global_batch_size": 32, "data_parallel_size": 2, "accumulate_grad_batches": 2}
    assert saved_batch({"identity": identity}) == (32, 2, 8)
    assert saved_batch({}) is None


SAVED = ScheduleIdentity(16, 2, 16, 2, 1, "adamw()", "linear()", 0.01)
SAVED_SCHEDULE = ExecutingSchedule(16, (("num_training_steps", 16), ("num_warmup_steps", 2)), 16)


def test_keep_global_batch_continues_the_saved_schedule_step_for_step():
    # 2 → 1 rank with accumulation 2 (set from the manifest): same global batch, same steps per epoch.
    now = replace(SAVED, data_parallel_size=1, accumulate_grad_batches=2)
    built = ExecutingSchedule(16, (("num_training_steps", 16), ("num_warmup_steps", 2)), 16)
    decision = decide(SAVED, SAVED_SCHEDULE, now, built, "keep_global_batch", position=8)
    assert decision.position == 8
    assert (decision.schedule.total_steps, decision.schedule.step_args) == (16, SAVED_SCHEDULE.step_args)
    assert decision.schedule.planned_updates == 16 and decision.schedule.policy == "keep_global_batch"
    # a changed length (another dataset) still runs the saved schedule, in the saved steps
    longer = replace(now, planned_total_steps=20)
    assert decide(SAVED, SAVED_SCHEDULE, longer, built, "keep_global_batch", position=8).schedule.total_steps == 16


def test_keep_global_batch_refuses_a_fit_whose_global_batch_differs():
    now = replace(SAVED, data_parallel_size=1, global_batch_size=8, planned_total_steps=32)
    with pytest.raises(ConfigError, match=r"keeps the global batch of 16, but this fit's is 8"):
        decide(SAVED, SAVED_SCHEDULE, now, SAVED_SCHEDULE, "keep_global_batch", position=8)
