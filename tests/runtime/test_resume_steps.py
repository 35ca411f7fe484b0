"""Each step of applying a resume decision, on a real (tiny, one-process) Trainer after a real fit."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.runtime import resume_steps as steps
from tests.runtime.harness import free_port

LR = 0.1


def _fit(root, lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 2}), **trainer_kwargs) -> flashdist.Trainer:
    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(0))
    task = flashdist.Task(nn.Linear(4, 1), loss_fn=nn.functional.mse_loss, optimizer="sgd", learning_rate=LR,
                          lr_scheduler=lr_scheduler)
    trainer = flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                                **trainer_kwargs)
    trainer.fit(task, DataLoader(TensorDataset(x, x[:, :1]), batch_size=4))
    return trainer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> flashdist.Trainer:
    """One fit shared by the step tests: each sets what it asserts, whatever an earlier one left."""
    return _fit(tmp_path_factory.mktemp("fitted"))


def _linear(step: int, warmup: int, total: int) -> float:
    """transformers' linear warmup then linear decay, written out."""
    return LR * (step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup)))


def test_set_optimizer_step_count_moves_global_step(fitted):
    trainer = fitted
    steps.set_optimizer_step_count(trainer, 17)
    assert trainer.global_step == 17


def test_rebuild_scheduler_builds_the_decided_schedule_at_the_position(fitted):
    trainer = fitted
    scheduler = steps.rebuild_scheduler(trainer, trainer.fit_run.plan, {"num_training_steps": 40, "num_warmup_steps": 4}, 10, "rescale")
    assert scheduler.last_epoch == 10 and scheduler is not trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(_linear(10, 4, 40), rel=1e-12)
    scheduler.step()
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(_linear(11, 4, 40), rel=1e-12)


def test_rebuild_scheduler_refuses_a_scheduler_it_cannot_rebuild(tmp_path):
    trainer = _fit(tmp_path, lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=2))
    with pytest.raises(ConfigError, match=r"resume_policy='keep_schedule' must rebuild the LR scheduler.*HINT"):
        steps.rebuild_scheduler(trainer, trainer.fit_run.plan, {}, 3, "keep_schedule")


def test_use_scheduler_makes_it_the_one_lightning_steps(fitted):
    trainer = fitted
    scheduler = steps.rebuild_scheduler(trainer, trainer.fit_run.plan, {"num_training_steps": 40, "num_warmup_steps": 4}, 0, "rescale")
    steps.use_scheduler(trainer, scheduler)
    assert trainer.lr_scheduler_configs[0].scheduler is scheduler
    steps.use_scheduler_in_deepspeed(trainer.strategy, scheduler)  # not DeepSpeed: nothing else to tell


def test_end_at_schedule_total_ends_the_run_by_steps_not_epochs(fitted):
    trainer = fitted
    steps.end_at_schedule_total(trainer, 40)
    assert (trainer.max_steps, trainer.max_epochs) == (40, -1)


def test_apply_decision_runs_every_step(fitted):
    trainer = fitted
    steps.apply_decision(trainer, trainer.fit_run.plan, 40, {"num_training_steps": 40, "num_warmup_steps": 4}, 10, "rescale")
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert (trainer.global_step, scheduler.last_epoch, trainer.max_steps, trainer.max_epochs) == (10, 10, 40, -1)


def test_resume_epoch_position_skips_the_seen_samples_and_counts_their_batches(fitted):
    trainer = fitted
    sampler = steps.install_sampler(trainer)  # one process, sequential order: resumable
    assert sampler is not None
    sampler.resume_at(-1, 0)  # nothing skipped (in case an earlier test used this sampler)
    assert list(sampler) == list(range(24))
    steps.resume_epoch_position(trainer, sampler, {"epoch": trainer.current_epoch, "samples_done": 8})
    sampler.set_epoch(trainer.current_epoch)  # as Lightning does when the epoch starts
    assert list(sampler) == list(range(8, 24))
    assert steps.epoch_position(trainer, sampler) == {"epoch": trainer.current_epoch, "samples_done": 8}


def test_a_fit_leaves_no_warning_filter_behind(tmp_path):
    before = list(warnings.filters)
    _fit(tmp_path)  # installs the resumable sampler, which silences Lightning's replay warning during the fit
    assert warnings.filters == before


def test_use_scheduler_in_deepspeed_replaces_a_scheduler_the_engine_would_step(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_PORT", str(free_port()))  # a fixed port collides with another run on the machine
    try:  # the process group goes even if the fit fails: a later in-process test inits its own
        trainer = _fit(tmp_path, strategy="deepspeed_stage_1", max_steps=3)
        engine = trainer.strategy.deepspeed_engine
        # Lightning 2.6 takes the scheduler away from the engine and steps it itself ...
        assert engine.lr_scheduler is None
        scheduler = steps.rebuild_scheduler(trainer, trainer.fit_run.plan, {"num_training_steps": 40, "num_warmup_steps": 4}, 3, "rescale")
        steps.use_scheduler_in_deepspeed(trainer.strategy, scheduler)
        assert engine.lr_scheduler is None  # ... so nothing is given to the engine to step a second time,
        engine.lr_scheduler = trainer.lr_scheduler_configs[0].scheduler  # but an engine that steps one gets the new one
        steps.use_scheduler_in_deepspeed(trainer.strategy, scheduler)
        assert engine.lr_scheduler is scheduler
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_sized_loader_that_starts_over_is_resumed_as_its_warning_says(tmp_path):
    """A custom batch sampler (sized, not splittable): the resumed epoch retrains the first batches, skips as many at the end."""
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import ModelCheckpoint

    from flashdist.tasks.classification import ClassificationTask

    class Stop(Exception):
        pass

    class Record(Callback):
        def __init__(self, stop_after: int | None):
            self.stop_after, self.trained = stop_after, []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.trained.append(int(batch[0][0, -1]))  # the batch's first sample id
            if len(self.trained) == self.stop_after:
                raise Stop

    x = torch.cat([torch.randn(12, 3), torch.arange(12.0)[:, None]], dim=1)
    batches = [[2 * i, 2 * i + 1] for i in range(6)]

    def fit(stop_after, ckpt_path=None):
        record = Record(stop_after)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
        trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                                    enable_progress_bar=False, enable_model_summary=False, callbacks=[record, checkpoint])
        task = ClassificationTask(nn.Sequential(nn.Linear(4, 2)), num_classes=2)
        trainer.fit(task, DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_sampler=batches), ckpt_path=ckpt_path)
        return record.trained

    with pytest.raises(Stop):
        fit(stop_after=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = fit(stop_after=None, ckpt_path=tmp_path / "ckpt" / "epoch=0-step=3.ckpt")
    assert trained == [0, 2, 4]  # the first 3 batches again; the last 3 (6, 8, 10) not in this epoch
    said = [str(w.message) for w in caught if w.category is steps.UnresumableEpochWarning]
    assert said == [steps.unresumable_epoch_message(3, 0, "TensorDataset", 6)]
    assert "its last 3 batch(es) per rank are not trained in this epoch" in said[0]
