"""The baselines ``bench schedulers`` times every scheduler against: direct assignment at its tightest.

No scheduler can do less work per step than computing the factor once and writing it into each
group over pairs built in advance (``m = f(step); for g, b in pairs: g["lr"] = b * m``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def make_optimizer(groups: int, momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD over ``groups`` one-element groups with distinct base LRs (momentum: CyclicLR/OneCycle need it)."""
    params = [
        {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1 * (1 + index / max(1, groups))} for index in range(groups)
    ]
    return torch.optim.SGD(params, lr=0.1, momentum=momentum)


def direct_assignment_of(lr_factor: Callable[[int], float], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """Direct assignment of a given schedule: ``m = lr_factor(step); for g, b in pairs: g["lr"] = b * m``."""
    pairs = tuple((group, group["lr"]) for group in optimizer.param_groups)
    step = 0

    def direct_step() -> None:
        nonlocal step
        step += 1
        factor = lr_factor(step)
        for group, base_lr in pairs:
            group["lr"] = base_lr * factor

    return direct_step


def linear_lr_factor(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The baseline's schedule: a hand-written linear warmup/decay factor."""
    decay_steps = max(1, total_steps - warmup_steps)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        value = (total_steps - step) / decay_steps
        return value if value > 0.0 else 0.0  # not max(): a builtin call costs more than the rest

    return lr_factor


def direct_assignment(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> Callable[[], None]:
    """The baseline: a hand-written linear warmup/decay, assigned group by group."""
    groups = optimizer.param_groups
    base_lrs = [group["lr"] for group in groups]
    step = 0
    lr_factor = linear_lr_factor(total_steps, warmup_steps)

    pairs = tuple(zip(groups, base_lrs))

    def direct_step() -> None:
        nonlocal step  # a closure cell: cheaper than an attribute or a list slot
        step += 1
        factor = lr_factor(step)
        for group, base_lr in pairs:
            group["lr"] = base_lr * factor

    return direct_step
