"""Optimizer and LR-scheduler registries, specs and builders."""

from flashdist.optim.build import build_lr_scheduler, build_optimizer, resolve_scheduler_kwargs
from flashdist.optim.entries import OptimizerEntry, SchedulerEntry
from flashdist.optim.optimizers import OPTIMIZERS
from flashdist.optim.param_groups import no_decay_names, param_groups_weight_decay
from flashdist.optim.schedulers import LR_SCHEDULERS
from flashdist.optim.specs import OptimizerSpec, SchedulerSpec, normalize_optimizer, normalize_scheduler

__all__ = [
    "LR_SCHEDULERS",
    "OPTIMIZERS",
    "OptimizerEntry",
    "OptimizerSpec",
    "SchedulerEntry",
    "SchedulerSpec",
    "build_lr_scheduler",
    "build_optimizer",
    "no_decay_names",
    "normalize_optimizer",
    "normalize_scheduler",
    "param_groups_weight_decay",
    "resolve_scheduler_kwargs",
]
