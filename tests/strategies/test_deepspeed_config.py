"""Filling a user DeepSpeed config's "auto" values (pure arithmetic, no processes)."""

from __future__ import annotations

import pytest

from flashdist import ConfigError
from flashdist.optim.specs import normalize_optimizer
from flashdist.plan import plan_steps
from flashdist.strategies.deepspeed_config import AutoValues, fill_auto_config, is_offloaded

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
    assert filled["scheduler"]["params"] == {"total_num_steps": 57, "warmup_num_steps": 0, "warmup_max_lr": 1e-3, "warmup_min_lr": 0.0}
    assert HF_STYLE["optimizer"]["params"]["lr"] == "auto"  # the caller's dict is not mutated


def test_task_weight_decay_fills_the_optimizer_and_adam_defaults_to_no_decay():
    values = AutoValues(1e-3, 0.05, 9, 3, 2, PLAN)
    assert fill_auto_config(HF_STYLE, values)["optimizer"]["params"]["weight_decay"] == 0.05
    adam = {"optimizer": {"type": "Adam", "params": {"weight_decay": "auto"}}}
    assert fill_auto_config(adam, VALUES)["optimizer"]["params"]["weight_decay"] == 0


@pytest.mark.parametrize(
    ("warmup", "steps"),
    [pytest.param(5, 5), pytest.param("0.1dur", 6), pytest.param(0.1, 6), pytest.param("1ep", 19), pytest.param("auto", 0)],
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
    with pytest.raises(ConfigError, match=r"both in the DeepSpeed config \('AdamW'\) and on the Task \(sgd\(momentum=0.9\)\)"):
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


def test_auto_values_flashdist_cannot_fill_are_listed():
    config = {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto"}}
    with pytest.raises(ConfigError, match=r"zero_optimization.reduce_bucket_size"):
        fill_auto_config(config, VALUES)


def test_is_offloaded():
    assert is_offloaded({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    assert is_offloaded({"zero_optimization": {"offload_optimizer": {"device": "nvme"}}})
    assert not is_offloaded({"zero_optimization": {"offload_optimizer": {"device": "none"}}})
    assert not is_offloaded({"zero_optimization": {"stage": 3}})
