import pytest

from tests.fitting import read_lr_csv, run_fit


@pytest.mark.multiprocess
def test_ddp_two_processes_plan_equals_taken_and_linear_schedule_ends_at_zero(tmp_path):
    # 1000 samples, batch 9, accumulation 3, 3 epochs: 56 batches per rank, not a multiple of 3.
    summary = run_fit(tmp_path, dataset_size=1000, batch_size=9, accumulate_grad_batches=3, max_epochs=3, devices=2, strategy="ddp")
    assert summary["world_size"] == 2 and summary["data_parallel_size"] == 2
    assert summary["micro_batches_per_epoch_per_rank"] == 56
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 57
    assert summary["lr"]["final"] == 0.0
    assert len(read_lr_csv(tmp_path)) == 57
