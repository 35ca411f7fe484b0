"""Schedules a user would bring to `flashdist bench schedulers --scheduler module:callable`."""

from __future__ import annotations

import math

import torch

from flashdist import Task


def warmup_then_inverse_sqrt(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """A hand-written LambdaLR: what a user's own schedule usually is."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10) / math.sqrt(max(step, 1)))


class UserTask(Task):
    """A Task subclass with a recipe registered on it (a recipe name needs --import of this module)."""


@UserTask.lr_schedulers
def halve_every_100(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)
