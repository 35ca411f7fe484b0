"""Strategy names → Lightning strategy objects (no processes)."""

from __future__ import annotations

import json

import pytest
from lightning.pytorch.strategies import DeepSpeedStrategy, DDPStrategy

from flashdist import ConfigError
from flashdist.strategies import route_for
from flashdist.strategies.deepspeed import CPUDeepSpeedStrategy, DeepSpeedRoute, FlashDeepSpeedStrategy
from flashdist.strategies.fsdp import FSDP2Strategy, FSDPRoute
from flashdist.strategies.names import load_deepspeed_config, resolve_strategy, runs_on_cpu


@pytest.mark.parametrize(
    ("name", "stage", "offload_optimizer", "offload_param"),
    [
        pytest.param("deepspeed_stage_1", 1, False, False),
        pytest.param("deepspeed_stage_2", 2, False, False),
        pytest.param("deepspeed_stage_2_offload", 2, True, False),
        pytest.param("deepspeed_stage_3", 3, False, False),
        pytest.param("deepspeed_stage_3_offload", 3, True, True),
    ],
)
def test_deepspeed_names_become_the_cpu_strategy_with_lightnings_zero_settings(name, stage, offload_optimizer, offload_param):
    strategy = resolve_strategy(name, "cpu")
    assert type(strategy) is CPUDeepSpeedStrategy
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == offload_optimizer
    assert ("offload_param" in zero) == offload_param
    assert isinstance(route_for(strategy), DeepSpeedRoute)


def test_deepspeed_on_cuda_keeps_lightnings_strategy_with_only_the_accumulation_change():
    strategy = resolve_strategy("deepspeed_stage_2", "gpu")
    assert type(strategy) is FlashDeepSpeedStrategy and isinstance(strategy, DeepSpeedStrategy)
    assert strategy.handles_gradient_accumulation is False


def test_fsdp_is_fsdp2_over_every_rank_on_any_device():
    for accelerator in ("cpu", "gpu"):
        strategy = resolve_strategy("fsdp", accelerator)
        assert type(strategy) is FSDP2Strategy
        assert isinstance(route_for(strategy), FSDPRoute)


def test_fsdp_refuses_a_data_parallel_size_it_would_override():
    with pytest.raises(ConfigError, match="shards over every rank"):
        FSDP2Strategy(data_parallel_size=1)


def test_ddp_and_lightning_objects_pass_through():
    assert resolve_strategy("ddp", "cpu") == "ddp"
    ddp = DDPStrategy()
    assert resolve_strategy(ddp, "cpu") is ddp
    assert resolve_strategy("auto", "cpu") == "auto"


def test_a_plain_lightning_deepspeed_object_gets_per_epoch_accumulation():
    strategy = DeepSpeedStrategy(stage=2)
    resolved = resolve_strategy(strategy, "cpu")
    assert resolved is strategy and type(resolved) is CPUDeepSpeedStrategy
    assert resolved.config["zero_optimization"]["stage"] == 2


def test_user_deepspeed_config_as_dict_and_as_json_path(tmp_path):
    config = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}
    from_dict = resolve_strategy(config, "cpu")
    assert type(from_dict) is CPUDeepSpeedStrategy and from_dict.config["zero_optimization"]["stage"] == 3
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    from_path = resolve_strategy(str(path), "cpu")
    assert from_path.config["zero_optimization"]["stage"] == 3
    assert config == {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto"}  # not mutated


def test_invalid_json_config_is_a_config_error_with_the_position(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"zero_optimization": {"stage": 2},}')
    with pytest.raises(ConfigError, match=r"not valid JSON.*line 1.*HINT"):
        resolve_strategy(str(path), "cpu")


def test_missing_or_non_object_json_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_deepspeed_config(tmp_path / "nope.json")
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        load_deepspeed_config(path)


def test_a_misspelled_strategy_name_suggests_the_close_ones():
    with pytest.raises(ConfigError, match=r"deepspeed_stage2.*did you mean 'deepspeed_stage_2'"):
        resolve_strategy("deepspeed_stage2", "cpu")


def test_runs_on_cpu():
    assert runs_on_cpu("cpu")
    assert not runs_on_cpu("gpu")
    assert not runs_on_cpu("cuda")


def test_cpu_deepspeed_forms_a_gloo_group_by_lightnings_public_backend_setting():
    # No override of Lightning's backend choice: a CPU root device gets torch's CPU backend,
    # and DeepSpeedStrategy(process_group_backend=...) is honoured as Lightning documents it.
    from flashdist.compat.lightning import process_group_settings

    assert process_group_settings(resolve_strategy("deepspeed_stage_2", "cpu"))[0] == "gloo"
    chosen = resolve_strategy(DeepSpeedStrategy(stage=2, process_group_backend="mpi"), "cpu")
    assert type(chosen) is CPUDeepSpeedStrategy and chosen.process_group_backend == "mpi"
    assert process_group_settings(chosen)[0] == "mpi"
