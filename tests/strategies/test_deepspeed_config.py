"""Filling a user DeepSpeed config's "auto" values (pure arithmetic, no processes)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from torch import nn

from flashdist import ConfigError
from flashdist.optim.specs import normalize_optimizer
from flashdist.plan import plan_steps
from flashdist.strategies.deepspeed_config import HIDDEN_SIZE_KEYS, AutoValues, fill_auto_config, hidden_size_of, is_offloaded

# The awkward sizes of the step-ledger issue: 56 micro-batches per rank, 19 steps per epoch, 57.
PLAN = plan_steps(dataset_size=1000, batch_size=9, data_parallel_size=2, accumulate_grad_batches=3, max_epochs=3)
VALUES = AutoValues(learning_rate=1e-3, weight_decay=None, micro_batch_size=9, accumulate_grad_batches=3, data_parallel_size=2, plan=PLAN)

HF_STYLE = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "zero_optimization": {"stage": 2},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {"total_num_steps": "auto", "warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_min_lr": "auto"},
    },
}


def test_every_auto_value_is_filled_from_the_task_and_the_plan():
    filled = fill_auto_config(HF_STYLE, VALUES)
    assert filled["train_micro_batch_size_per_gpu"] == 9
    assert filled["gradient_accumulation_steps"] == 3
    assert filled["train_batch_size"] == 9 * 3 * 2
    assert filled["optimizer"]["params"] == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
    assert filled["scheduler"]["params"] == {"total_num_steps": 57, "warmup_num_steps": 1, "warmup_max_lr": 1e-3, "warmup_min_lr": 0.0}
    assert HF_STYLE["optimizer"]["params"]["lr"] == "auto"  # the caller's dict is not mutated


def test_task_weight_decay_fills_the_optimizer_and_adam_defaults_to_no_decay():
    values = AutoValues(1e-3, 0.05, 9, 3, 2, PLAN)
    assert fill_auto_config(HF_STYLE, values)["optimizer"]["params"]["weight_decay"] == 0.05
    adam = {"optimizer": {"type": "Adam", "params": {"weight_decay": "auto"}}}
    assert fill_auto_config(adam, VALUES)["optimizer"]["params"]["weight_decay"] == 0


@pytest.mark.parametrize(
    ("warmup", "steps"),
    [pytest.param(5, 5), pytest.param("0.1dur", 6), pytest.param(0.1, 6), pytest.param("1ep", 19), pytest.param("auto", 1, id="auto-is-1-as-hf-fills-it-deepspeed-refuses-0")],
)
def test_warmup_accepts_flashdist_durations(warmup, steps):
    config = {"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": warmup}}}
    assert fill_auto_config(config, VALUES)["scheduler"]["params"]["warmup_num_steps"] == steps


def test_matching_concrete_values_are_accepted():
    config = {"train_micro_batch_size_per_gpu": 9, "gradient_accumulation_steps": 3, "train_batch_size": 54,
              "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 57}}}
    assert fill_auto_config(config, VALUES) == config


@pytest.mark.parametrize(
    ("config", "match"),
    [
        pytest.param({"train_micro_batch_size_per_gpu": 8}, r"train_micro_batch_size_per_gpu=8 contradicts .*batch_size.* = 9", id="micro"),
        pytest.param({"gradient_accumulation_steps": 4}, r"gradient_accumulation_steps=4 contradicts .*accumulate_grad_batches.* = 3", id="accum"),
        pytest.param({"train_batch_size": 64}, r"train_batch_size=64 contradicts .* = 54", id="global"),
        pytest.param({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}, r"lr=0.1 contradicts Task\(learning_rate=...\) = 0.001", id="lr"),
        pytest.param({"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 54}}}, r"total_num_steps=54 contradicts .* = 57", id="total"),
        pytest.param({"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": 0.5}}}, r"warmup_max_lr=0.5 contradicts .* = 0.001", id="peak"),
    ],
)
def test_a_contradicting_concrete_value_names_both(config, match):
    with pytest.raises(ConfigError, match=match) as error:
        fill_auto_config(config, VALUES)
    assert "HINT:" in str(error.value)


def test_weight_decay_contradicting_the_task_names_both():
    values = AutoValues(1e-3, 0.05, 9, 3, 2, PLAN)
    with pytest.raises(ConfigError, match=r"weight_decay=0.1 contradicts Task\(weight_decay=...\) = 0.05"):
        fill_auto_config({"optimizer": {"type": "AdamW", "params": {"weight_decay": 0.1}}}, values)


def test_an_optimizer_in_both_places_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"both in the DeepSpeed config \('AdamW'\) and on the Task \(optimizer=sgd\(momentum=0.9\)\)"):
        fill_auto_config(HF_STYLE, VALUES, task_optimizer=normalize_optimizer(("sgd", {"momentum": 0.9})))


def test_a_scheduler_in_both_places_is_refused():
    config = {"scheduler": HF_STYLE["scheduler"]}
    with pytest.raises(ConfigError, match=r"scheduler is given both .*'WarmupDecayLR'"):
        fill_auto_config(config, VALUES, task_has_scheduler=True)


def test_a_config_optimizer_would_silently_drop_the_tasks_scheduler():
    with pytest.raises(ConfigError, match="never builds the Task's lr_scheduler"):
        fill_auto_config({"optimizer": HF_STYLE["optimizer"]}, VALUES, task_has_scheduler=True)


def test_auto_lr_without_a_task_learning_rate_says_what_to_set():
    values = AutoValues(None, None, 9, 3, 2, PLAN)
    with pytest.raises(ConfigError, match=r"lr='auto' needs Task\(learning_rate=...\)"):
        fill_auto_config({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}, values)


def test_auto_values_flashdist_cannot_fill_are_all_listed_in_one_error():
    config = {"zero_optimization": {"stage": 3, "sub_group_size": "auto"}, "steps_per_print": "auto", "fp16": {"loss_scale": "auto"}}
    with pytest.raises(ConfigError, match=r"cannot fill: \['zero_optimization.sub_group_size', 'steps_per_print', 'fp16.loss_scale'\]"):
        fill_auto_config(config, VALUES)


# (precision, fp16.enabled, bf16.enabled) as the HF Trainer fills them from its fp16/bf16 flags.
@pytest.mark.parametrize(
    ("precision", "fp16", "bf16"),
    [("32-true", False, False), ("bf16-mixed", False, True), ("bf16-true", False, True), ("16-mixed", True, False), ("16-true", True, False)],
)
def test_fp16_and_bf16_enabled_follow_the_trainer_precision(precision, fp16, bf16):
    config = {"fp16": {"enabled": "auto", "loss_scale": 0}, "bf16": {"enabled": "auto"}}
    filled = fill_auto_config(config, replace(VALUES, precision=precision))
    assert (filled["fp16"]["enabled"], filled["bf16"]["enabled"]) == (fp16, bf16)
    assert filled["fp16"]["loss_scale"] == 0


@pytest.mark.parametrize(
    ("config", "precision", "match"),
    [
        ({"bf16": {"enabled": True}}, "32-true", r"bf16.enabled=True contradicts Trainer\(precision='32-true'\)"),
        ({"fp16": {"enabled": False}}, "16-mixed", r"fp16.enabled=False contradicts Trainer\(precision='16-mixed'\)"),
    ],
)
def test_a_precision_section_contradicting_the_trainer_names_both(config, precision, match):
    with pytest.raises(ConfigError, match=match):
        fill_auto_config(config, replace(VALUES, precision=precision))


# (gradient_clip_val, config value, filled): unset clips nothing, as under DDP (HF would fill its max_grad_norm=1.0).
@pytest.mark.parametrize(
    ("clip_val", "given", "filled"),
    [(None, "auto", 0.0), (0.5, "auto", 0.5), (0, "auto", 0.0), (0.5, 0.5, 0.5), (None, 1.0, 1.0)],
)
def test_gradient_clipping_is_filled_from_gradient_clip_val(clip_val, given, filled):
    result = fill_auto_config({"gradient_clipping": given}, replace(VALUES, gradient_clip_val=clip_val))
    assert result["gradient_clipping"] == filled


def test_gradient_clipping_contradicting_gradient_clip_val_names_both():
    with pytest.raises(ConfigError, match=r"gradient_clipping=1.0 contradicts Trainer\(gradient_clip_val=...\) = 0.5"):
        fill_auto_config({"gradient_clipping": 1.0}, replace(VALUES, gradient_clip_val=0.5))


ZERO3_AUTO = {"zero_optimization": {"stage": 3, **{key: "auto" for key in HIDDEN_SIZE_KEYS}}}


@pytest.mark.parametrize(
    ("hidden", "reduce_bucket", "prefetch", "persistence"),
    [(32, 1024, 921, 320), (768, 589824, 530841, 7680), (1000, 1_000_000, 900_000, 10_000)],
)
def test_zero3_bucket_sizes_derive_from_the_hidden_size(hidden, reduce_bucket, prefetch, persistence):
    zero = fill_auto_config(ZERO3_AUTO, replace(VALUES, hidden_size=hidden))["zero_optimization"]
    assert (zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"], zero["stage3_param_persistence_threshold"]) == (
        reduce_bucket, prefetch, persistence)


def test_hidden_size_from_a_transformers_config_else_the_widest_linear():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50))
    wrapped = nn.Sequential(nn.Linear(3, 500))
    wrapped.add_module("backbone", bert)
    assert hidden_size_of(wrapped) == (48, "backbone.config.hidden_size")
    assert hidden_size_of(nn.Sequential(nn.Linear(16, 40), nn.ReLU(), nn.Linear(40, 2))) == (40, "the largest nn.Linear in/out features")
    assert hidden_size_of(nn.Sequential(nn.Conv2d(1, 2, 3)))[0] is None


def test_hidden_size_keys_without_a_hidden_size_are_refused_naming_them():
    with pytest.raises(ConfigError, match=r"\['reduce_bucket_size', 'stage3_prefetch_bucket_size', 'stage3_param_persistence_threshold'\].*HINT"):
        fill_auto_config(ZERO3_AUTO, VALUES)


def test_before_launch_the_plan_values_stay_auto_and_everything_else_is_checked():
    before = replace(VALUES, plan=None, micro_batch_size=None, data_parallel_size=None, hidden_size=32)
    config = {**HF_STYLE, **ZERO3_AUTO, "gradient_clipping": "auto", "bf16": {"enabled": "auto"}}
    filled = fill_auto_config(config, before, before_launch=True)
    assert filled["train_micro_batch_size_per_gpu"] == filled["train_batch_size"] == "auto"
    assert filled["scheduler"]["params"]["total_num_steps"] == "auto"
    assert filled["gradient_accumulation_steps"] == 3 and filled["gradient_clipping"] == 0.0
    assert filled["optimizer"]["params"]["lr"] == 1e-3 and filled["zero_optimization"]["reduce_bucket_size"] == 1024
    with pytest.raises(ConfigError, match=r"cannot fill: \['steps_per_print'\]"):
        fill_auto_config({**config, "steps_per_print": "auto"}, before, before_launch=True)


def test_is_offloaded():
    assert is_offloaded({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    assert is_offloaded({"zero_optimization": {"offload_optimizer": {"device": "nvme"}}})
    assert not is_offloaded({"zero_optimization": {"offload_optimizer": {"device": "none"}}})
    assert not is_offloaded({"zero_optimization": {"stage": 3}})
