"""One FitRun per fit: the fit's state in one object, nothing stashed on Lightning's objects."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist import ConfigError
from flashdist.runtime.callbacks import FitCallbacks
from flashdist.tasks.classification import ClassificationTask


def _loader() -> DataLoader:
    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)


def _task() -> ClassificationTask:
    return ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw", learning_rate=0.01,
                              lr_scheduler=("linear_schedule_with_warmup", {"num_warmup_steps": 0.25}))


def _trainer(root, **kwargs) -> flashdist.Trainer:
    return flashdist.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **kwargs)


def _flashdist_attributes(obj) -> list[str]:
    return [name for name in vars(obj) if name.startswith("_flashdist")]


def test_a_fit_keeps_its_state_in_its_fit_run_and_nothing_on_lightnings_objects(tmp_path):
    trainer, task = _trainer(tmp_path), _task()
    trainer.fit(task, _loader())
    run = trainer.fit_run
    assert (run.plan.planned_total_steps, run.counts.optimizer_steps) == (12, 12)
    assert run.schedule is not None and run.schedule.warmup_steps == 3
    assert run.route.choice is not None and run.route.choice.resolved_class == "AdamW"
    assert run.resume.policy == "strict" and run.resume.decision is None
    assert not run.preemption.preempted
    assert run.trust.routes(trainer.strategy)  # this fit's checkpoint trust reads the strategy's loads
    # The summary the report shows is the object the ledger wrote, not a file read back.
    assert run.summary == json.loads((tmp_path / "summary.json").read_text())
    for obj in (trainer, trainer.strategy, trainer.fit_loop, task):
        assert _flashdist_attributes(obj) == [], type(obj).__name__


def test_each_fit_gets_a_fresh_fit_run_and_callbacks_in_the_same_places(tmp_path):
    trainer = _trainer(tmp_path)
    first_run, first_callbacks = trainer.fit_run, trainer.fit_callbacks.in_order()
    places = [trainer.callbacks.index(c) for c in first_callbacks]
    trainer.fit(_task(), _loader())
    assert trainer.fit_run is not first_run and trainer.fit_run.counts.optimizer_steps == 12
    assert [trainer.callbacks.index(c) for c in trainer.fit_callbacks.in_order()] == places
    assert not any(c in trainer.callbacks for c in first_callbacks)
    assert trainer.fit_run.trust is not first_run.trust and trainer.fit_run.trust.routes(trainer.strategy)
    assert trainer.ledger is trainer.fit_callbacks.ledger


def test_flashdist_callbacks_run_in_the_declared_order_before_lightnings_own(tmp_path):
    user = pl.Callback()
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, callbacks=[user])
    names = [type(c).__name__ for c in trainer.callbacks]
    own = [type(c).__name__ for c in trainer.fit_callbacks.in_order()]
    assert own == [f.type for f in FitCallbacks.__dataclass_fields__.values()]
    start = names.index(own[0])
    assert trainer.callbacks[0] is user and names[start:start + len(own)] == own
    assert names.index("ModelCheckpoint") > start + len(own) - 1 and trainer.callbacks.index(trainer.progress_bar_callback) > start


def test_a_task_fitted_by_a_plain_lightning_trainer_is_told_to_use_flashdists(tmp_path):
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match=r"flashdist.Trainer's step plan.*lightning.*HINT: fit it with flashdist.Trainer"):
        trainer.fit(_task(), _loader())
