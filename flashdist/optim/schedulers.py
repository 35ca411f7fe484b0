"""The LR-scheduler registry: torch, Hugging Face transformers, DeepSpeed, flashdist.

Names follow the spec: torch classes by lower-cased class name (``steplr``), transformers'
``get_<x>`` functions as ``<x>`` (``cosine_schedule_with_warmup``). The warmup families'
plain names resolve to flashdist's closed-form fast path once it is registered
(``flashdist.optim.fast``); the transformers originals stay reachable as ``hf:<name>``.
"""

from __future__ import annotations


import torch.optim.lr_scheduler as torch_sched

from flashdist.optim.entries import SchedulerEntry
from flashdist.optim.optimizers import DEEPSPEED_AVAILABLE
from flashdist.optim.providers import ENTRY_POINT_GROUPS, EntryPointSource
from flashdist.registry import Registry

LR_SCHEDULERS: Registry[SchedulerEntry] = Registry("lr_scheduler")

HF_PREFIX = "hf:"

# Torch's schedulers, `lambdalr` first as in the spec's listing. Default interval "epoch"
# (Lightning's default) unless the schedule is defined in optimizer steps.
_TORCH = (
    SchedulerEntry("LambdaLR", torch_sched.LambdaLR, "torch"),
    SchedulerEntry("MultiplicativeLR", torch_sched.MultiplicativeLR, "torch"),
    SchedulerEntry("StepLR", torch_sched.StepLR, "torch"),
    SchedulerEntry("MultiStepLR", torch_sched.MultiStepLR, "torch"),
    SchedulerEntry("ConstantLR", torch_sched.ConstantLR, "torch"),
    SchedulerEntry("LinearLR", torch_sched.LinearLR, "torch"),
    SchedulerEntry("ExponentialLR", torch_sched.ExponentialLR, "torch"),
    SchedulerEntry("SequentialLR", torch_sched.SequentialLR, "torch"),
    SchedulerEntry("PolynomialLR", torch_sched.PolynomialLR, "torch"),
    SchedulerEntry("CosineAnnealingLR", torch_sched.CosineAnnealingLR, "torch"),
    SchedulerEntry("ChainedScheduler", torch_sched.ChainedScheduler, "torch"),
    SchedulerEntry("ReduceLROnPlateau", torch_sched.ReduceLROnPlateau, "torch", requires_monitor=True),
    # CyclicLR and OneCycleLR are per-batch schedules; their peak defaults to the optimizer's LR.
    SchedulerEntry(
        "CyclicLR", torch_sched.CyclicLR, "torch", default_interval="step", lr_defaults=(("max_lr", 1.0), ("base_lr", 1 / 25))
    ),
    SchedulerEntry(
        "OneCycleLR",
        torch_sched.OneCycleLR,
        "torch",
        default_interval="step",
        total_steps_arg="total_steps",
        lr_defaults=(("max_lr", 1.0),),
        total_steps_alternatives=("epochs", "steps_per_epoch"),
    ),
    SchedulerEntry("CosineAnnealingWarmRestarts", torch_sched.CosineAnnealingWarmRestarts, "torch"),
)

_WARMUP = ("num_warmup_steps",)
# Lazy "module:attr" targets: importing transformers.optimization pulls in transformers'
# trainer utilities and peft in every process, ranks included, also when no transformers schedule
# is used (0.15 s of CPU per process measured after flashdist's other imports, which bring in
# most of that subtree anyway); building one imports it (optim/build.py resolve_lazy).
_HF = "transformers.optimization:"
# transformers' schedules, all defined per optimizer step.
_TRANSFORMERS = (
    SchedulerEntry("constant_schedule", _HF + "get_constant_schedule", "transformers", "step"),
    SchedulerEntry("constant_schedule_with_warmup", _HF + "get_constant_schedule_with_warmup", "transformers", "step", None, _WARMUP),
    SchedulerEntry("linear_schedule_with_warmup", _HF + "get_linear_schedule_with_warmup", "transformers", "step", "num_training_steps", _WARMUP),
    SchedulerEntry("cosine_schedule_with_warmup", _HF + "get_cosine_schedule_with_warmup", "transformers", "step", "num_training_steps", _WARMUP),
    SchedulerEntry(
        "cosine_with_hard_restarts_schedule_with_warmup",
        _HF + "get_cosine_with_hard_restarts_schedule_with_warmup",
        "transformers",
        "step",
        "num_training_steps",
        _WARMUP,
    ),
    SchedulerEntry(
        "polynomial_decay_schedule_with_warmup",
        _HF + "get_polynomial_decay_schedule_with_warmup",
        "transformers",
        "step",
        "num_training_steps",
        _WARMUP,
    ),
    SchedulerEntry("inverse_sqrt_schedule", _HF + "get_inverse_sqrt_schedule", "transformers", "step", None, _WARMUP),
    SchedulerEntry(
        "cosine_with_min_lr_schedule_with_warmup",
        _HF + "get_cosine_with_min_lr_schedule_with_warmup",
        "transformers",
        "step",
        "num_training_steps",
        _WARMUP,
    ),
    SchedulerEntry(
        "cosine_with_min_lr_schedule_with_warmup_lr_rate",
        _HF + "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
        "transformers",
        "step",
        "num_training_steps",
        _WARMUP,
    ),
    SchedulerEntry(
        "wsd_schedule",
        _HF + "get_wsd_schedule",
        "transformers",
        "step",
        "num_training_steps",
        ("num_warmup_steps", "num_decay_steps", "num_stable_steps"),
        total_steps_alternatives=("num_stable_steps",),
    ),
    SchedulerEntry("reduce_on_plateau_schedule", _HF + "get_reduce_on_plateau_schedule", "transformers", "epoch", requires_monitor=True),
    SchedulerEntry("greedy_schedule", _HF + "get_greedy_schedule", "transformers", "epoch", requires_monitor=True),
    SchedulerEntry("adafactor_schedule", _HF + "get_adafactor_schedule", "transformers", "step", requires_optimizer="hf:adafactor"),
)

# DeepSpeed's schedules (deepspeed.runtime.lr_schedules), per optimizer step, step counts
# filled by the plan. Their peak LR defaults to the optimizer's LR.
_DS = "deepspeed.runtime.lr_schedules:"
_DEEPSPEED = (
    SchedulerEntry("WarmupLR", _DS + "WarmupLR", "deepspeed", "step", None, ("warmup_num_steps",), lr_defaults=(("warmup_max_lr", 1.0),)),
    SchedulerEntry(
        "WarmupDecayLR",
        _DS + "WarmupDecayLR",
        "deepspeed",
        "step",
        "total_num_steps",
        ("warmup_num_steps",),
        lr_defaults=(("warmup_max_lr", 1.0),),
    ),
    SchedulerEntry("WarmupCosineLR", _DS + "WarmupCosineLR", "deepspeed", "step", "total_num_steps", ("warmup_num_steps",)),
    SchedulerEntry("OneCycle", _DS + "OneCycle", "deepspeed", "step", lr_defaults=(("cycle_max_lr", 1.0), ("cycle_min_lr", 1 / 25))),
    SchedulerEntry("LRRangeTest", _DS + "LRRangeTest", "deepspeed", "step"),
)

# Schedulers whose `schedulers=` kwarg takes other scheduler specs, built on the same optimizer.
NESTED_SCHEDULERS = frozenset({"sequentiallr", "chainedscheduler"})

for _entry in _TORCH:
    LR_SCHEDULERS.register(_entry)
for _entry in _TRANSFORMERS:
    LR_SCHEDULERS.register(_entry)
    LR_SCHEDULERS.register(SchedulerEntry(**{**_entry.__dict__, "name": HF_PREFIX + _entry.name}))
if DEEPSPEED_AVAILABLE:
    for _entry in _DEEPSPEED:
        LR_SCHEDULERS.register(_entry)

# The warmup families' plain names now build flashdist's closed-form fast path (same kwargs,
# same LRs to the bit, a fraction of the cost per step); hf:<name> keeps transformers' LambdaLR.
from flashdist.optim.fast import register_fast_schedules  # noqa: E402  (needs the entries above)

register_fast_schedules(LR_SCHEDULERS)
# Third-party packages' schedulers (entry-point group flashdist.lr_schedulers), listed when installed.
LR_SCHEDULERS.add_source(EntryPointSource(ENTRY_POINT_GROUPS["lr_scheduler"], SchedulerEntry))
