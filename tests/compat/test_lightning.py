"""Each Lightning internal flashdist relies on (flashdist/compat/lightning.py), tested by name."""

from __future__ import annotations

import inspect
import signal

import pytest
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DeepSpeedStrategy, ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flashdist
from flashdist.compat import CompatError
from flashdist.compat import lightning as compat


class _Probe(LightningModule):
    """Records what the shims read at each micro-batch of a real fit."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.seen: list[tuple[int, bool, int]] = []
        self.validates: bool | None = None

    def on_train_start(self):
        self.validates = compat.validation_loader_defined(self.trainer)

    def training_step(self, batch, batch_idx):
        trainer = self.trainer
        self.seen.append((batch_idx, compat.should_accumulate(trainer), compat.batches_done_in_epoch(trainer)))
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, val: bool = False, **kwargs):
    import lightning.pytorch as pl

    probe = _Probe()
    kwargs.setdefault("enable_checkpointing", False)
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, **kwargs)
    loader = DataLoader(TensorDataset(torch.ones(5, 2)), batch_size=1)
    trainer.fit(probe, loader, loader if val else None)
    return trainer, probe


def test_should_accumulate_is_the_fit_loops_decision_epoch_end_included(tmp_path):
    _, probe = _fit(tmp_path, accumulate_grad_batches=2)
    # 5 micro-batches, windows of 2: steps after batches 1 and 3, and after 4 (the epoch's partial window).
    assert [accumulates for _, accumulates, _ in probe.seen] == [True, False, True, False, False]


def test_batches_done_in_epoch_counts_finished_micro_batches(tmp_path):
    trainer, probe = _fit(tmp_path)
    assert [done for _, _, done in probe.seen] == [0, 1, 2, 3, 4]


def test_add_batches_done_and_set_optimizer_steps_done_move_lightnings_counters(tmp_path):
    trainer, _ = _fit(tmp_path, max_steps=3)
    compat.set_optimizer_steps_done(trainer, 7)
    assert trainer.global_step == 7
    before = compat.batches_done_in_epoch(trainer)
    compat.add_batches_done(trainer, 2)
    assert compat.batches_done_in_epoch(trainer) == before + 2
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == before + 2


def test_mark_checkpoint_saved_at_stops_a_second_save_of_that_step(tmp_path):
    import lightning.pytorch as pl

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")

    class SavedStep2Elsewhere(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                compat.mark_checkpoint_saved_at(checkpoint, 2, str(tmp_path / "elsewhere.ckpt"))

    _fit(tmp_path, max_steps=3, callbacks=[SavedStep2Elsewhere(), checkpoint], enable_checkpointing=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step=1.ckpt", "step=3.ckpt"]


def test_mark_checkpoint_saved_at_stops_save_last_writing_last_ckpt_after_a_stop_mid_epoch(tmp_path):
    import lightning.pytorch as pl

    def stop_at_step_2(mark: bool):
        checkpoint = ModelCheckpoint(dirpath=tmp_path / f"mark={mark}", save_last=True, save_top_k=0)

        class SaveElsewhereAndStop(pl.Callback):  # what flashdist's preemption does after its own save
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == 2:
                    if mark:
                        compat.mark_checkpoint_saved_at(checkpoint, 2, str(tmp_path / "preempted-step=2.ckpt"))
                    trainer.should_stop = True

        _fit(tmp_path, max_steps=5, callbacks=[SaveElsewhereAndStop(), checkpoint], enable_checkpointing=True)
        return sorted(p.name for p in (tmp_path / f"mark={mark}").glob("*"))

    # Unmarked, Lightning writes last.ckpt at train end, after the loop ended mid-epoch; marked, it does not.
    assert stop_at_step_2(mark=False) == ["last.ckpt"]
    assert stop_at_step_2(mark=True) == []


def test_validation_loader_defined_before_the_loop_runs(tmp_path):
    assert _fit(tmp_path / "with", val=True, limit_val_batches=1)[1].validates is True
    assert _fit(tmp_path / "without")[1].validates is False


def test_kill_launched_ranks_reads_the_subprocess_launchers_procs():
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    assert "procs" in inspect.signature(_SubprocessScriptLauncher.__init__).parameters or "self.procs" in inspect.getsource(
        _SubprocessScriptLauncher.__init__)
    assert callable(_SubprocessScriptLauncher.kill)
    assert compat.kill_launched_ranks(object(), 9) is False


def test_adopt_subclass_keeps_a_deepspeed_strategys_settings():
    from flashdist.strategies.deepspeed import FlashDeepSpeedStrategy

    strategy = DeepSpeedStrategy(stage=2, logging_batch_size_per_gpu=3)
    compat.adopt_subclass(strategy, FlashDeepSpeedStrategy)
    assert type(strategy) is FlashDeepSpeedStrategy and strategy.config["zero_optimization"]["stage"] == 2
    assert not any(tuple(vars(c).get("__slots__", ())) for c in DeepSpeedStrategy.__mro__)  # state in __dict__ only

    class WithState(DeepSpeedStrategy):
        def __init__(self):
            super().__init__()

    with pytest.raises(CompatError, match="must add methods only"):
        compat.adopt_subclass(DeepSpeedStrategy(), WithState)


def test_configure_model_counts_as_overridden_for_model_parallel_setup():
    from lightning.pytorch.utilities.model_helpers import is_overridden

    module = LightningModule()
    assert "is_overridden(\"configure_model\"" in inspect.getsource(ModelParallelStrategy.setup)
    assert not is_overridden("configure_model", module)
    with compat.configure_model_counts_as_overridden(module):
        assert is_overridden("configure_model", module)
    assert not is_overridden("configure_model", module)


def test_set_parallel_sizes_are_the_ones_model_parallel_setup_environment_reads():
    source = inspect.getsource(ModelParallelStrategy.setup_environment)
    assert "self._data_parallel_size" in source and "self._tensor_parallel_size" in source
    strategy = ModelParallelStrategy()
    compat.set_parallel_sizes(strategy, 4, 1)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (4, 1)


def test_private_override_refuses_a_method_the_base_lost():
    class Base:
        def _kept(self): ...

    compat.private_override(Base, "test")(Base._kept)
    with pytest.raises(CompatError, match=r"Base\._gone no longer exists"):
        def _gone(self): ...
        compat.private_override(Base, "test")(_gone)


@pytest.mark.parametrize("name", ["_format_batch_size_and_grad_accum_config", "_setup_model_and_optimizer",
                                  "_get_process_group_backend", "_init_deepspeed_distributed"])
def test_deepspeed_strategy_private_methods_flashdist_overrides_or_calls_exist(name):
    assert callable(getattr(DeepSpeedStrategy, name, None))


def test_deepspeed_strategy_fills_the_batch_config_and_initializes_through_those_methods():
    assert "_format_batch_size_and_grad_accum_config()" in inspect.getsource(DeepSpeedStrategy._format_config)
    assert "self._setup_model_and_optimizer(" in inspect.getsource(DeepSpeedStrategy.init_deepspeed) + inspect.getsource(
        DeepSpeedStrategy._initialize_deepspeed_train)


def test_the_epoch_loop_broadcasts_sigterm_each_step_through_one_method(tmp_path):
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

    # advance() calls the method on the instance at every step of a multi-process fit, so an
    # instance attribute replaces it for one fit without touching the class.
    source = inspect.getsource(_TrainingEpochLoop.advance)
    assert "self._broadcast_sigterm_tensor()" in source and "world_size > 1" in source
    assert "torch.distributed.broadcast" in inspect.getsource(_TrainingEpochLoop._broadcast_sigterm_tensor)
    trainer, _ = _fit(tmp_path)
    compat.skip_per_step_sigterm_broadcast(trainer)
    assert trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor() is None
    assert _TrainingEpochLoop._broadcast_sigterm_tensor is not compat._no_sigterm_broadcast


@pytest.mark.parametrize("env", [{}, {"SLURM_NTASKS": "2"}, {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "bash"},
                                 {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "interactive"}, {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"},
                                 {"SLURM_JOB_ID": "7"}])
def test_launched_by_srun_is_lightnings_srun_rule(env, monkeypatch):
    from lightning.fabric.plugins.environments.slurm import _is_srun_used

    for name in [n for n in __import__("os").environ if n.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert compat.launched_by_srun(env) is _is_srun_used()


def test_process_group_settings_are_the_backend_and_timeout_ddp_would_use():
    from datetime import timedelta

    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import DDPStrategy

    strategy = DDPStrategy(accelerator=CPUAccelerator(), parallel_devices=[torch.device("cpu")], timeout=timedelta(seconds=7))
    assert compat.process_group_settings(strategy) == ("gloo", timedelta(seconds=7))
    assert compat.process_group_settings(object()) == (None, None)


def test_trainer_run_registers_its_signal_handlers_through_the_signal_connector_after_restore():
    from lightning.pytorch import Trainer

    source = inspect.getsource(Trainer._run)
    assert source.index("_restore_modules_and_callbacks") < source.index("self._signal_connector.register_signal_handlers()")
    assert source.index("self._signal_connector.register_signal_handlers()") < source.index("self._run_stage()")


def test_during_the_sanity_check_sigterm_is_flashdists_handler_not_lightnings(tmp_path):
    from tests.runtime.test_bad_input import _data, _task, _trainer

    seen = {}

    class Probe(Callback):
        def on_sanity_check_start(self, trainer, pl_module):
            seen["sigterm"] = signal.getsignal(signal.SIGTERM)

    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[Probe()], num_sanity_val_steps=1)
    trainer.fit(_task(), DataLoader(_data(), batch_size=4), DataLoader(_data(), batch_size=4))
    assert getattr(seen["sigterm"], "__self__", None) is trainer.fit_callbacks.preemption


def test_trainer_ckpt_path_reads_the_checkpoint_connectors_path_set_by_resume_start():
    from lightning.pytorch import Trainer
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

    assert "self._checkpoint_connector._ckpt_path" in inspect.getsource(Trainer.ckpt_path.fget)
    source = inspect.getsource(_CheckpointConnector.resume_start)
    assert source.index("self._ckpt_path = checkpoint_path") < source.index("strategy.load_checkpoint(")


def test_loggers_write_this_step_is_the_logger_connectors_decision(tmp_path):
    import csv

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    class Logs(LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 1)
            self.decided: list[int] = []

        def training_step(self, batch, batch_idx):
            self.log("seen_step", float(self.global_step), on_step=True, on_epoch=False)  # logged on every step
            return self.layer(batch[0]).sum()

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if compat.loggers_write_this_step(self.trainer):
                self.decided.append(self.global_step - 1)  # the step that just ran

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Logs()
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, log_every_n_steps=3,
                         logger=CSVLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(module, DataLoader(TensorDataset(torch.ones(10, 2)), batch_size=1))
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        written = [int(float(row["seen_step"])) for row in csv.DictReader(f) if row.get("seen_step")]
    assert written == module.decided == [2, 5, 8]


def test_every_restore_reads_the_checkpoint_through_strategy_load_checkpoint(tmp_path):
    trainer, _ = _fit(tmp_path)
    checkpoint = tmp_path / "saved.ckpt"
    trainer.save_checkpoint(checkpoint)
    import lightning.pytorch as pl

    resumed = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    read: list[str] = []

    def load(original, path, *args, **kwargs):
        read.append(str(path))
        return original(path, *args, **kwargs)

    compat.route_checkpoint_load(resumed.strategy, load)
    compat.route_checkpoint_load(resumed.strategy, load)  # routed again (a second fit): replaced, not nested
    loader = DataLoader(TensorDataset(torch.ones(5, 2)), batch_size=1)
    resumed.fit(_Probe(), loader, ckpt_path=str(checkpoint))
    resumed.validate(_Probe(), loader, ckpt_path=str(checkpoint))
    assert read == [str(checkpoint)] * 2 and resumed.global_step == 10


@pytest.mark.parametrize("use_distributed_sampler", [True, False])
@pytest.mark.parametrize("devices", [1, 2])
def test_distributed_sampler_injected_is_what_the_data_connector_decides(tmp_path, devices, use_distributed_sampler):
    import lightning.pytorch as pl

    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                         use_distributed_sampler=use_distributed_sampler, logger=False)
    loader = DataLoader(TensorDataset(torch.zeros(8, 2)), batch_size=2, shuffle=True)
    assert compat.distributed_sampler_injected(trainer) == trainer._data_connector._requires_distributed_sampler(loader)
    assert compat.distributed_sampler_injected(trainer) == (devices > 1 and use_distributed_sampler)


def test_route_train_sampler_replaces_lightnings_injected_training_sampler(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.connectors.data_connector import _process_dataloader
    from lightning.pytorch.trainer.states import RunningStage, TrainerFn
    from torch.utils.data import DistributedSampler, SequentialSampler

    seen = []

    def make(loader, num_replicas, rank, **kwargs):
        seen.append((type(loader.sampler).__name__, num_replicas, rank))
        return DistributedSampler(loader.dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, shuffle=False)
    for devices in (2, 1):
        trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                             logger=False)
        compat.route_train_sampler(trainer, make)
        train = _process_dataloader(trainer, TrainerFn.FITTING, RunningStage.TRAINING, loader)
        assert seen[-1] == ("SequentialSampler", devices, 0)  # Lightning asks with shuffle=True; ours is built instead
        assert isinstance(train.sampler, DistributedSampler) and not train.sampler.shuffle and train is not loader
        val = _process_dataloader(trainer, TrainerFn.FITTING, RunningStage.VALIDATING, loader)
        assert len(seen) == (1 if devices == 2 else 2) and val.sampler is not train.sampler  # other stages: Lightning's own
    assert isinstance(loader.sampler, SequentialSampler)  # the user's loader is untouched


def test_fsdp2_checkpoint_metadata_file_is_lightnings_meta_pt():
    import inspect

    from lightning.fabric.strategies import model_parallel

    from flashdist.compat.lightning import dcp_metadata_filename

    assert dcp_metadata_filename() == "meta.pt"  # the name the asynchronous FSDP2 save writes
    assert "_METADATA_FILENAME" in inspect.getsource(model_parallel._load_checkpoint)  # and the one Lightning reads


class _Peeks(LightningModule):
    """Peeks at the rest of each accumulation window (as the token-weighted loss does) and records what the loop gives."""

    def __init__(self, accumulate: int):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.accumulate = accumulate
        self.trained: list[int] = []
        self.peeked: dict[int, list[int]] = {}
        self.last_batch: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.trained.append(int(batch[0]))
        self.last_batch.append(self.trainer.is_last_batch)
        if batch_idx % self.accumulate == 0:
            ahead = compat.peek_training_batches(self.trainer, self.accumulate - 1)
            self.peeked[batch_idx] = [int(b[0]) for b in ahead]
            assert compat.peek_training_batches(self.trainer, self.accumulate - 1) == ahead  # peeking again reads the same
        return self.layer(batch.float().reshape(-1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Numbers(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(7))


@pytest.mark.parametrize("sized", [True, False], ids=["sized-loader", "iterable-loader-lightning-prefetches"])
def test_peek_training_batches_returns_what_the_loop_trains_next_and_changes_nothing(tmp_path, sized):
    import lightning.pytorch as pl

    peeking = _Peeks(accumulate=3)
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, accumulate_grad_batches=3)
    trainer.fit(peeking, DataLoader(torch.arange(7) if sized else _Numbers(), batch_size=1))
    # 7 batches per epoch, 2 epochs: each epoch's windows are [0 1 2] [3 4 5] [6], the last cut short by the epoch's end
    # (a peek there asks for 2 and gets none: the loader is exhausted).
    assert peeking.trained == list(range(7)) * 2
    assert peeking.peeked == {0: [1, 2], 3: [4, 5], 6: []}  # the second epoch's peeks overwrite the first's, equal
    assert peeking.last_batch == [i == 6 for i in range(7)] * 2  # the loop still knows its last batch


class _Counting(torch.utils.data.IterableDataset):
    """0, 1, 2, ... (no length), from where its state says; records the states it was given."""

    def __init__(self):
        self.next_value, self.loaded = 0, []

    def __iter__(self):
        while True:
            self.next_value += 1
            yield torch.tensor([float(self.next_value - 1)])


class _StatefulLoader(DataLoader):
    """A DataLoader with Lightning's ``_Stateful`` protocol: its state is the next value its stream yields."""

    def state_dict(self):
        return {"next_value": self.dataset.next_value}

    def load_state_dict(self, state):
        self.dataset.loaded.append(state)
        self.dataset.next_value = state["next_value"]


class _PlansEarly(LightningModule):
    """Sets the train data up in configure_optimizers, as flashdist's planning (and estimated_stepping_batches) does."""

    def __init__(self, release: bool):
        super().__init__()
        self.layer, self.release, self.trained = nn.Linear(1, 1), release, []

    def configure_optimizers(self):
        self.trainer.fit_loop.setup_data()
        if self.release:
            compat.release_train_data(self.trainer)
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def training_step(self, batch, batch_idx):
        self.trained.append(int(batch[0]))
        return self.layer(batch).sum()


def _stream_fit(root, max_steps: int, release: bool, ckpt_path=None):
    import lightning.pytorch as pl

    module, dataset = _PlansEarly(release), _Counting()
    checkpoint = ModelCheckpoint(dirpath=root, every_n_train_steps=3, save_top_k=-1)
    trainer = pl.Trainer(default_root_dir=root, accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint])
    trainer.fit(module, _StatefulLoader(dataset, batch_size=None), ckpt_path=ckpt_path)
    return module, dataset, trainer


def test_train_data_released_after_planning_is_set_up_again_after_the_restore(tmp_path):
    first, _, _ = _stream_fit(tmp_path, max_steps=3, release=False)
    assert first.trained == [0, 1, 2]
    saved = torch.load(tmp_path / "epoch=0-step=3.ckpt", weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert saved == [{"next_value": 4}]  # Lightning's prefetch: one batch ahead of training (see the fetcher test)
    # Set up before the restore and kept: Lightning never loads the saved state (#20550); the stream starts over.
    kept, kept_data, _ = _stream_fit(tmp_path / "kept", max_steps=5, release=False, ckpt_path=tmp_path / "epoch=0-step=3.ckpt")
    assert kept_data.loaded == [] and kept.trained[0] == 0
    assert compat.train_data_set_up(_stream_fit(tmp_path / "plain", max_steps=1, release=False)[2])
    # Released: the loop sets the data up again after the restore and loads the state into the loader.
    released, released_data, trainer = _stream_fit(tmp_path / "released", max_steps=5, release=True,
                                                   ckpt_path=tmp_path / "epoch=0-step=3.ckpt")
    assert released_data.loaded == [{"next_value": 4}] and released.trained == [4, 5]


def test_the_prefetching_fetcher_reports_loader_states_of_trained_batches(tmp_path):
    import lightning.pytorch as pl

    reported = []

    class Report(Callback):
        def on_train_start(self, trainer, pl_module):
            assert compat.keep_loader_states_of_trained_batches(trainer)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            reported.append((int(batch[0]), compat.loader_states_of_trained_batches(trainer)))

    dataset = _Counting()
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=3, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, callbacks=[Report()])
    trainer.fit(_PlansEarly(release=False), _StatefulLoader(dataset, batch_size=None))
    # After training value v the stream's own state is v + 2 (a batch fetched ahead); the reported one is v + 1.
    assert reported == [(0, [{"next_value": 1}]), (1, [{"next_value": 2}]), (2, [{"next_value": 3}])]
    checkpoint = {"loops": {"fit_loop": {"state_dict": {"combined_loader": [{"next_value": 4}]}}}}
    compat.save_loader_states(checkpoint, [{"next_value": 3}])
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"next_value": 3}]


def test_route_train_sampler_keeps_a_stateful_dataloader_stateful(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.trainer.connectors.data_connector import _process_dataloader
    from lightning.pytorch.trainer.states import RunningStage, TrainerFn

    from flashdist.data.sampler import has_own_state, sampler_for_loader

    torchdata = pytest.importorskip("torchdata.stateful_dataloader", reason="torchdata is in the test extras")
    loader = torchdata.StatefulDataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, shuffle=False)
    for devices in (2, 1):
        trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=devices,
                             strategy="ddp" if devices > 1 else "auto", logger=False)
        compat.route_train_sampler(trainer, lambda dl, num_replicas, rank: sampler_for_loader(dl, num_replicas, rank))
        train = _process_dataloader(trainer, TrainerFn.FITTING, RunningStage.TRAINING, loader)
        assert type(train) is torchdata.StatefulDataLoader and has_own_state(train)  # Lightning still saves its state
        if devices == 1:
            assert train is loader  # one process: its own sampler and state, untouched
