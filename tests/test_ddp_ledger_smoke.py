import pytest

from tests.fitting import read_lr_csv, run_fit


@pytest.mark.multiprocess
def test_ddp_two_processes_plan_equals_taken_and_linear_schedule_ends_at_zero(tmp_path):
    # 1000 samples, batch 9, accumulation 3, 3 epochs: 56 batches per rank, not a multiple of 3.
    summary = run_fit(tmp_path, dataset_size=1000, batch_size=9, accumulate_grad_batches=3, max_epochs=3, devices=2, strategy="ddp")
    assert summary["world_size"] == 2 and summary["data_parallel_size"] == 2
    assert summary["micro_batches_per_epoch_per_rank"] == 56
    assert summary["planned_total_steps"] == summary["optimizer_steps"] == summary["scheduler_steps"] == 57
    assert summary["lr"]["after_last_scheduler_step"] == 0.0
    assert len(read_lr_csv(tmp_path)) == 57


@pytest.mark.multiprocess
def test_flashdist_plan_agrees_with_a_real_fit(tmp_path):
    from flashdist.cli.plan import plan_report

    settings = dict(dataset_size=203, batch_size=5, accumulate_grad_batches=4, max_epochs=2, limit_train_batches=0.9)
    summary = run_fit(tmp_path, devices=2, strategy="ddp", lr_scheduler=["linear_schedule_with_warmup", {"num_warmup_steps": "1ep"}], **settings)
    report = plan_report(devices=2, warmup="1ep", **settings)
    for key in ("world_size", "data_parallel_size", "micro_batches_per_epoch_per_rank", "optimizer_steps_per_epoch", "planned_total_steps", "planned_warmup_steps"):
        assert summary[key] == report[key], key
    assert summary["optimizer_steps"] == report["planned_total_steps"]
