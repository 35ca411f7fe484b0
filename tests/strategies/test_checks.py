"""The strategy checks that run before any process starts (flashdist/strategies/checks.py), as tables."""

from __future__ import annotations

import pytest
from torch import nn

from flashdist import ConfigError, Task
from flashdist.strategies.checks import LaunchFacts, check_before_launch, check_precision
from flashdist.strategies.names import resolve_strategy


@pytest.mark.parametrize(
    ("strategy", "precision", "on_cpu", "refused"),
    [
        ("ddp", "16-mixed", True, r"precision='16-mixed' \(float16 AMP\) does not run on CPU.*HINT: use precision='bf16-mixed'"),
        ("deepspeed_stage_2", "16-mixed", True, "does not run on CPU"),
        ("ddp", "bf16-mixed", True, None),
        ("ddp", "bf16-true", True, None),
        ("ddp", "16-mixed", False, None),  # CUDA runs float16 AMP
        ("fsdp", "64-true", True, r"precision='64-true' is not supported by strategy='fsdp'.*'bf16-mixed'"),
        ("fsdp", "bf16-true", True, None),
    ],
)
def test_precision_the_device_or_strategy_cannot_run_is_refused(strategy, precision, on_cpu, refused):
    resolved = resolve_strategy(strategy, "cpu")
    if refused is None:
        check_precision(resolved, precision, on_cpu)
    else:
        with pytest.raises(ConfigError, match=refused):
            check_precision(resolved, precision, on_cpu)


def _facts(task, **overrides) -> LaunchFacts:
    return LaunchFacts(**{"precision": "32-true", "gradient_clip_val": None, "gradient_clip_algorithm": None,
                          "accumulate_grad_batches": 1, "task": task, **overrides})


@pytest.mark.parametrize(
    ("strategy", "algorithm", "refused"),
    [("deepspeed_stage_3", "value", "DeepSpeed's engine clips by the total norm only"), ("deepspeed_stage_1", "norm", None),
     ("ddp", "value", None), ("fsdp", "value", None), ("fsdp", "norm", None)],
)
def test_clipping_by_value_is_refused_where_the_strategy_cannot(strategy, algorithm, refused):
    task = Task(nn.Linear(2, 2), learning_rate=0.1)
    facts = _facts(task, gradient_clip_val=0.5, gradient_clip_algorithm=algorithm)
    if refused is None:
        check_before_launch(resolve_strategy(strategy, "cpu"), facts)
    else:
        with pytest.raises(ConfigError, match=refused):
            check_before_launch(resolve_strategy(strategy, "cpu"), facts)


def test_a_deepspeed_config_scheduler_would_lose_the_group_lr_scales():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    task = Task(Net(), learning_rate=0.1, layer_decay=0.5)
    config = {"zero_optimization": {"stage": 2}, "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5}}}
    with pytest.raises(ConfigError, match=r"scheduler \('WarmupLR'\) sets one absolute LR for every group.*HINT: put the schedule on the Task"):
        check_before_launch(resolve_strategy(config, "cpu"), _facts(task))
    check_before_launch(resolve_strategy({"zero_optimization": {"stage": 2}}, "cpu"), _facts(task))


def test_fsdp1_flat_parameters_are_refused_before_launch_when_groups_need_names():
    from lightning.pytorch.strategies import FSDPStrategy

    task = Task(nn.Linear(2, 2), learning_rate=0.1, weight_decay=0.01)
    with pytest.raises(ConfigError, match="use_orig_params=False"):
        check_before_launch(FSDPStrategy(use_orig_params=False), _facts(task))
