"""Each DeepSpeed internal flashdist relies on (flashdist/compat/deepspeed.py), tested by name."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flashdist.compat import deepspeed as compat
from flashdist.compat.deepspeed import SAFE_GLOBALS, load_shards_weights_only, safe_globals


@pytest.mark.parametrize("dp_rank", [0, 3, 12])
@pytest.mark.parametrize("bf16", [False, True])
def test_zero_shard_rank_reads_the_name_deepspeeds_engine_gives_a_shard(dp_rank, bf16):
    from deepspeed.runtime.engine import DeepSpeedEngine

    engine = SimpleNamespace()
    engine._get_zero_ckpt_prefix = lambda rank, bf16_mode: DeepSpeedEngine._get_zero_ckpt_prefix(engine, rank, bf16_mode)
    path = DeepSpeedEngine._get_rank_zero_ckpt_name(engine, "/ckpt", "tag", mp_rank=0, dp_rank=dp_rank, bf16_mode=bf16)
    assert compat.zero_shard_rank(path.rsplit("/", 1)[1]) == dp_rank
    assert compat.zero_shard_rank("mp_rank_00_model_states.pt") is None


@pytest.mark.parametrize("module, name", [("deepspeed.runtime.zero.stage_1_and_2", "DeepSpeedZeroOptimizer"),
                                          ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3")])
def test_zero_step_counter_relies_on_one_wrapper_step_per_update_and_its_overflow_flag(module, name):
    import importlib

    wrapper_class = getattr(importlib.import_module(module), name)
    source = inspect.getsource(wrapper_class)
    assert "def step(" in source and "self.overflow" in source

    calls = []

    class Wrapper:
        overflow = False

        def step(self):
            return "stepped"

    wrapper = Wrapper()
    counter = compat.ZeroStepCounter(wrapper, "inner", lambda inner, args, kwargs: calls.append(inner))
    assert wrapper.step() == "stepped" and calls == ["inner"]
    wrapper.overflow = True
    wrapper.step()
    assert calls == ["inner"]  # an fp16 overflow skipped the update: not counted
    counter.remove()
    wrapper.overflow = False
    wrapper.step()
    assert calls == ["inner"]


@pytest.mark.parametrize(
    ("module", "cls"),
    [
        ("deepspeed.runtime.zero.stage_1_and_2", "DeepSpeedZeroOptimizer"),
        ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3"),
        ("deepspeed.runtime.bf16_optimizer", "BF16_Optimizer"),
    ],
)
def test_zero_optimizers_set_global_grad_norm_before_clipping(module, cls):
    # The pre-clip norm is assigned in step() before the gradients are clipped; the
    # 2-process parity fits check the value itself against a one-process reference.
    import importlib

    source = inspect.getsource(_undecorated(getattr(importlib.import_module(module), cls).step))
    assigned = source.find("self._global_grad_norm =")
    assert assigned != -1, f"{cls}.step no longer sets _global_grad_norm"
    clipped = [source.find(name) for name in ("unscale_and_clip_grads", "clip_tensors_by_global_norm", "clip_grad") if name in source]
    assert clipped and assigned < min(clipped), f"{cls}.step sets _global_grad_norm after clipping"


def _undecorated(function):
    """``step`` under DeepSpeed's ``instrument_w_nvtx``, which wraps without functools.wraps."""
    for cell in function.__closure__ or ():
        inner = cell.cell_contents
        if callable(inner) and getattr(inner, "__name__", None) == "step":
            return _undecorated(inner)
    return function


def test_torch_checkpoint_engine_load_unpickles_with_weights_only_false():
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    assert "weights_only=False" in inspect.getsource(TorchCheckpointEngine.load)


def test_deepspeed_engine_reads_its_shards_through_self_checkpoint_engine_load():
    from deepspeed.runtime.engine import DeepSpeedEngine

    source = inspect.getsource(DeepSpeedEngine)
    assert "self.checkpoint_engine.load(" in source and "checkpoint_engine=self.checkpoint_engine" in source


def test_the_safe_globals_deepspeed_pickles_still_import():
    assert [f"{c.__module__}:{c.__qualname__}" for c in safe_globals()] == list(SAFE_GLOBALS)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_replaced_load_refuses_a_pickled_payload_and_loads_tensors_and_deepspeed_classes(tmp_path):
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.zero.config import ZeroStageEnum

    engine = SimpleNamespace(checkpoint_engine=TorchCheckpointEngine())
    load_shards_weights_only(engine)
    good, bad, marker = tmp_path / "good.pt", tmp_path / "bad.pt", tmp_path / "ran"
    torch.save({"w": torch.ones(2), "zero_stage": ZeroStageEnum.gradients}, good)
    torch.save({"w": torch.ones(2), "x": _Payload(marker)}, bad)
    assert engine.checkpoint_engine.load(str(good))["zero_stage"] is ZeroStageEnum.gradients
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed") as refused:
        engine.checkpoint_engine.load(str(bad))
    assert refused.value.path == str(bad)  # the refusal names the shard, so its rank can be told
    assert not marker.exists()


def test_build_shm_op_announces_the_cpu_shared_memory_op_on_stdout_and_is_dropped(capsys):
    # deepspeed.comm.torch.build_shm_op print()s "DeepSpeed <op> built successfully" on every
    # init_distributed (compat/deepspeed.py shm_op_announcement_dropped relies on it).
    import importlib

    from flashdist.compat.deepspeed import shm_op_announcement_dropped

    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op()
    assert "built successfully" in capsys.readouterr().out
    with shm_op_announcement_dropped():
        ds_torch.build_shm_op()
    assert capsys.readouterr().out == ""
    assert ds_torch.build_shm_op.__name__ == "build_shm_op"  # put back


def test_deepspeed_caches_its_world_group_clone_and_a_destroyed_one_is_forgotten(monkeypatch):
    """Assumption: DeepSpeed keeps its clone of the world group in ``groups._WORLD_GROUP`` for the
    process's life, so after ``destroy_process_group()`` a second DeepSpeed fit would get a dead group."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils import groups

    from tests.fitting import free_port

    def init() -> None:  # as Lightning's DeepSpeed strategy does, through deepspeed.comm
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(free_port()))
        deepspeed.init_distributed("gloo", auto_mpi_discovery=False, rank=0, world_size=1)

    monkeypatch.setattr(groups, "_WORLD_GROUP", None)
    init()
    try:
        live = groups._clone_world_group()
        compat.forget_destroyed_world_group()
        assert groups._WORLD_GROUP is live  # a live clone is kept
        dist.destroy_process_group()
        init()
        assert groups._clone_world_group() is live  # DeepSpeed hands back the dead clone ...
        with pytest.raises(ValueError, match="not registered"):
            dist.get_global_rank(live, 0)  # ... on which deepspeed.initialize fails
        compat.forget_destroyed_world_group()
        fresh = groups._clone_world_group()
        assert fresh is not live and dist.get_global_rank(fresh, 0) == 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
