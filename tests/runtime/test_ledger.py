"""The step ledger and its LR log, as units: counting, the plan check, the summary, lr.csv across resumes."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist.runtime import ledger as ledger_module
from flashdist.runtime.ledger import LedgerMismatchError, LrLog


# ---- LrLog ----------------------------------------------------------------------------------
def test_lr_log_keeps_only_the_checkpointed_rows_then_appends(tmp_path):
    path = tmp_path / "lr.csv"
    log = LrLog(path, groups=2, keep_rows=0)
    for step in range(1, 6):
        log.append([step / 10, step / 100])
    log.flush()  # 5 rows on disk; the checkpoint holds 3: rows 4-5 are retrained
    log = LrLog(path, groups=2, keep_rows=3)
    log.append([0.45, 0.0045])
    log.flush()
    assert path.read_text().splitlines() == ["step,lr,lr_group1", "1,0.1,0.01", "2,0.2,0.02", "3,0.3,0.03", "4,0.45,0.0045"]


def test_lr_log_writes_in_batches_so_long_runs_hold_few_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_module, "FLUSH_EVERY_ROWS", 3)
    path = tmp_path / "lr.csv"
    log = LrLog(path, groups=1, keep_rows=0)
    for step in range(1, 8):
        log.append([step / 10])
    assert path.read_text().splitlines()[1:] == ["1,0.1", "2,0.2", "3,0.3", "4,0.4", "5,0.5", "6,0.6"]
    log.flush()
    assert path.read_text().splitlines()[-1] == "7,0.7"


def test_a_norm_still_waiting_for_its_all_reduce_holds_its_row_back_from_a_batch_write(tmp_path, monkeypatch):
    from flashdist.strategies.grad_norm import PendingNorm

    monkeypatch.setattr(ledger_module, "FLUSH_EVERY_ROWS", 3)
    path = tmp_path / "lr.csv"
    log = LrLog(path, groups=1, keep_rows=0, extra_columns=("grad_norm",))
    waiting = PendingNorm()
    log.append([0.1, 1.5])
    log.append([0.2, waiting])  # FSDP2: this update's batch is not reduced yet
    log.append([0.3, 2.5])  # the batch write: row 1 only, rows 2-3 stay in order
    assert path.read_text().splitlines() == ["step,lr,grad_norm", "1,0.1,1.5"]
    waiting.value = 2.0
    log.flush()
    assert path.read_text().splitlines()[1:] == ["1,0.1,1.5", "2,0.2,2.0", "3,0.3,2.5"]
    log.append([0.4, PendingNorm()])  # a fit that failed before the reduction
    log.flush()
    assert path.read_text().splitlines()[-1] == "4,0.4,nan"


def test_lr_log_resumed_without_its_file_numbers_rows_from_the_checkpoints_step(tmp_path):
    log = LrLog(tmp_path / "lr.csv", groups=1, keep_rows=4)  # a checkpoint of 4 updates, no earlier lr.csv here
    log.append([0.5])
    assert log.read_rows() == [[0.5]]
    assert (tmp_path / "lr.csv").read_text().splitlines() == ["step,lr", "5,0.5"]


def test_lr_log_read_rows_includes_pending_rows_and_every_group(tmp_path):
    log = LrLog(tmp_path / "lr.csv", groups=3, keep_rows=0)
    log.append([0.1, 0.2, 0.3])
    assert log.read_rows() == [[0.1, 0.2, 0.3]]


# ---- StepLedger ------------------------------------------------------------------------------
def _fit(root, *, strict_ledger: bool = True, **kwargs) -> flashdist.Trainer:
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
    task = flashdist.Task(nn.Linear(3, 1), loss_fn=nn.functional.mse_loss, optimizer="sgd", learning_rate=0.1,
                          lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 2}))
    trainer = flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                                strict_ledger=strict_ledger, **kwargs)
    trainer.fit(task, DataLoader(TensorDataset(x, x[:, :1]), batch_size=4))
    return trainer


def test_the_ledger_counts_every_update_and_writes_the_summary_and_lr_csv(tmp_path):
    trainer = _fit(tmp_path, accumulate_grad_batches=2)  # 5 batches per epoch: windows 2, 2, 1 -> 3 updates
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["optimizer_steps"] == summary["planned_total_steps"] == summary["scheduler_steps"] == 6
    assert summary["optimizer_steps_per_epoch"] == [3, 3] and summary["completed"] is True
    rows = trainer.fit_run.lr_log.read_rows()
    # The LR each update used: linear warmup over 2 steps, then linear decay to 0 at step 6.
    assert [r[0] for r in rows] == pytest.approx([0.0, 0.05, 0.1, 0.075, 0.05, 0.025])
    # final: the LR the last update used (lr.csv's last row, the console's "final"); after it the schedule reached 0.
    assert summary["lr"] == {"first": 0.0, "peak": 0.1, "final": pytest.approx(0.025), "after_last_scheduler_step": pytest.approx(0.0)}


def _mismatched(summary: dict) -> dict:
    return {**summary, "optimizer_steps": summary["planned_total_steps"] - 1}


def test_a_mismatch_fails_loudly_or_warns_when_not_strict(tmp_path):
    trainer = _fit(tmp_path)
    summary = trainer.fit_run.summary
    with pytest.raises(LedgerMismatchError, match=r"planned 10 optimizer steps, took 9 \(see summary.json\)"):
        trainer.ledger._check(_mismatched(summary))
    trainer.ledger.strict = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.ledger._check(_mismatched(summary))
    assert any("step ledger mismatch" in str(w.message) for w in caught)
    trainer.ledger._check(summary)  # equal: nothing to say


def test_the_scheduler_check_counts_scheduler_steps_of_the_whole_run(tmp_path):
    trainer = _fit(tmp_path)
    summary = trainer.fit_run.summary
    with pytest.raises(LedgerMismatchError, match="the scheduler stepped 10 times, expected 11"):
        trainer.ledger._check({**summary, "scheduler_steps_expected": 11})


def test_state_dict_holds_the_counters_a_resume_restores(tmp_path):
    trainer = _fit(tmp_path)
    state = trainer.ledger.state_dict()
    assert state == {"optimizer_steps": 10, "scheduler_steps": 10, "lr_first": 0.0, "lr_peak": 0.1, "lr_last": pytest.approx(0.0125)}


def test_a_tensor_lr_is_read_when_lr_csv_is_written_not_at_each_update(tmp_path):
    from lightning.pytorch import LightningModule

    from flashdist.bench.syncs import syncs_during

    class TensorLr(LightningModule):  # what a compiled or capturable step, or a fused kernel on a GPU, runs with
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.model(batch[0]), batch[1])

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=torch.tensor(0.5), foreach=False)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    syncs = syncs_during(lambda: trainer.fit(TensorLr(), DataLoader(TensorDataset(x, x[:, :1]), batch_size=4)))
    assert not [where for where in syncs if "ledger.py" in where and ": _count" in where]  # the per-update hook
    assert [r[0] for r in trainer.fit_run.lr_log.read_rows()] == pytest.approx([0.5, 0.25, 0.5 / 3, 0.125])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["lr"]["first"] == pytest.approx(0.5) and summary["lr"]["peak"] == pytest.approx(0.5)
    assert summary["lr"]["final"] == pytest.approx(0.125) and summary["lr"]["after_last_scheduler_step"] == pytest.approx(0.1)
