"""Strategy checks that run before any process starts: one ``ConfigError``, printed once.

``flashdist.Trainer`` calls :func:`check_precision` at construction and
:func:`check_before_launch` at the top of ``fit`` (so ``flashdist fit`` refuses in the
launching process, exit code 2), and again with the step plan and the loader's batch size
when the launching process can know them (runtime/planning.py ``plan_before_launch``), so a
contradicting DeepSpeed ``train_batch_size`` or ``total_num_steps`` is refused there too. Each
rank repeats only what could not be known before launch.

Each check is its own function over plain facts (:class:`LaunchFacts`), so a new one is one
more function called from :func:`check_before_launch`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from flashdist.errors import ConfigError
from flashdist.plan import StepPlan
from flashdist.strategies import route_name
from flashdist.strategies.base import check_optimizer_runs_here
from flashdist.strategies.deepspeed_config import PLANNED_KEYS, AutoValues, fill_auto_config, task_optimizer_if_given

# Lightning's FSDP2 path (ModelParallelStrategy) accepts only these.
FSDP2_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-true")


@dataclass(frozen=True)
class LaunchFacts:
    """What the Trainer and the Task say before launch (no data loader, no process group)."""

    precision: str
    gradient_clip_val: float | None
    gradient_clip_algorithm: str | None
    accumulate_grad_batches: int
    task: Any  # the LightningModule (its learning_rate, weight_decay, specs, modules)
    # Known before launch only when the launching process sees the training loader (else None).
    plan: StepPlan | None = None
    micro_batch_size: int | None = None
    data_parallel_size: int | None = None


def check_before_launch(strategy: Any, facts: LaunchFacts) -> None:
    """Every strategy-config check that needs no data loader; raises the first ``ConfigError``.

    Example:
        >>> check_before_launch(trainer.strategy, LaunchFacts("32-true", None, None, 1, task))  # doctest: +SKIP
    """
    check_gradient_clipping(strategy, facts.gradient_clip_val, facts.gradient_clip_algorithm)
    check_optimizer_route(strategy, facts.task)
    if _is_deepspeed(strategy):
        check_deepspeed_config(strategy.config, facts)
    if _is_fsdp1(strategy):
        check_fsdp1_groups(strategy, facts.task)


def check_precision(strategy: Any, precision: Any, on_cpu: bool) -> None:
    """Refuse a precision the device or the strategy cannot run (Lightning would silently swap or fail per rank).

    Example:
        >>> check_precision("ddp", "16-mixed", on_cpu=True)
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: precision='16-mixed' (float16 AMP) does not run on CPU. ...
    """
    text = str(precision) if precision is not None else "32-true"
    if on_cpu and text in ("16-mixed", "16"):
        raise ConfigError(
            f"precision={text!r} (float16 AMP) does not run on CPU.",
            accepted=("32-true", "bf16-mixed", "bf16-true"),
            hint="use precision='bf16-mixed' (bfloat16 autocast; no loss scaling needed) on CPU.",
        )
    if _is_fsdp2(strategy) and text not in FSDP2_PRECISIONS:
        raise ConfigError(
            f"precision={text!r} is not supported by strategy='fsdp' (FSDP2).",
            accepted=FSDP2_PRECISIONS,
            hint="use 'bf16-mixed'.",
        )


def check_gradient_clipping(strategy: Any, gradient_clip_val: float | None, gradient_clip_algorithm: str | None) -> None:
    """DeepSpeed clips by norm only (in its engine); FSDP1's plugin cannot clip by norm."""
    if not gradient_clip_val:
        return
    algorithm = str(gradient_clip_algorithm or "norm").lower()
    if algorithm == "value" and _is_deepspeed(strategy):
        raise ConfigError(
            "gradient_clip_algorithm='value' with a DeepSpeed strategy: DeepSpeed's engine clips by the total norm only.",
            accepted=("gradient_clip_algorithm='norm'",),
            hint=f"use gradient_clip_algorithm='norm' (gradient_clip_val={gradient_clip_val} is then the max norm), or strategy='ddp'/'fsdp'.",
        )
    if algorithm == "norm" and _is_fsdp1(strategy):
        raise ConfigError(
            "gradient_clip_algorithm='norm' with Lightning's FSDPStrategy (FSDP1): its precision plugin cannot clip by norm.",
            hint="use strategy='fsdp' (FSDP2, clips by the total norm over all shards), or gradient_clip_algorithm='value'.",
        )


def check_deepspeed_config(config: Any, facts: LaunchFacts) -> None:
    """Fill the config's ``"auto"`` values once, in the launching process, to refuse early.

    The batch and step counts too when ``facts`` carry the loader's batch size and the step plan.
    """
    if not isinstance(config, dict):
        return
    task = facts.task
    grouping = getattr(task, "grouping", None)
    scaled = grouping is not None and (grouping.layer_decay is not None or any(rule.lr_scale != 1.0 for rule in grouping.rules))
    if scaled and "scheduler" in config:
        raise ConfigError(
            f"the DeepSpeed config's scheduler ({config['scheduler'].get('type')!r}) sets one absolute LR for every group, "
            "so the Task's param_groups lr_scale / layer_decay would be lost.",
            hint="put the schedule on the Task (lr_scheduler=..., DeepSpeed's warmuplr/warmupdecaylr included): it keeps each group's scale.",
        )
    values = AutoValues.from_task(task, facts.plan, facts.micro_batch_size, precision=facts.precision,
                                  gradient_clip_val=facts.gradient_clip_val, data_parallel_size=facts.data_parallel_size)
    fill_auto_config(
        config,
        replace(values, accumulate_grad_batches=facts.accumulate_grad_batches),
        task_has_scheduler=getattr(task, "scheduler_spec", None) is not None,
        task_optimizer=task_optimizer_if_given(task),
        before_launch=True,
    )


def needs_step_plan(strategy: Any) -> bool:
    """Whether the strategy's config has keys that only the loader's batch size or the step plan decide.

    Example:
        >>> needs_step_plan("ddp")
        False
    """
    if not _is_deepspeed(strategy) or not isinstance(strategy.config, dict):
        return False
    scheduler_params = (strategy.config.get("scheduler") or {}).get("params") or {}
    present = {key for key in strategy.config} | {f"scheduler.params.{key}" for key in scheduler_params}
    return any(key in present for key in PLANNED_KEYS)


def check_fsdp1_groups(strategy: Any, task: Any) -> None:
    if not strategy.kwargs.get("use_orig_params", True) and task is not None:
        flags = {p.requires_grad for p in task.parameters()}
        if flags == {True, False}:  # e.g. LoRA: frozen base weights next to trainable adapters
            raise ConfigError(
                "the model has frozen and trainable parameters (LoRA, or requires_grad=False layers), but "
                "FSDPStrategy(use_orig_params=False) flattens them into one FlatParameter per unit, which must be all one or the other.",
                hint="use strategy='fsdp' (FSDP2: each parameter sharded on its own), or keep use_orig_params=True.",
            )
    weight_decay = getattr(task, "weight_decay", None)
    if weight_decay is not None and not strategy.kwargs.get("use_orig_params", True):
        raise ConfigError(
            f"Task(weight_decay={weight_decay}) groups parameters by name, but FSDPStrategy(use_orig_params=False) "
            "flattens them into one FlatParameter per unit.",
            hint="keep Lightning's default use_orig_params=True, or use strategy='fsdp' (FSDP2).",
        )


def check_optimizer_route(strategy: Any, task: Any) -> None:
    """An optimizer its provider refuses under this strategy (schedule-free under DeepSpeed, ...), refused before launch.

    Each rank's route would refuse it again when building the optimizer (strategies/base.py); here
    it is one message, before any process starts.
    """
    spec = getattr(task, "optimizer_spec", None)
    if spec is None:
        return
    # The device each rank will train on; a strategy object not yet given its devices trains on CPU here.
    device = strategy.root_device if getattr(strategy, "parallel_devices", None) else torch.device("cpu")
    check_optimizer_runs_here(spec, route_name(strategy), device)


def _is_deepspeed(strategy: Any) -> bool:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return isinstance(strategy, DeepSpeedStrategy)


def _is_fsdp2(strategy: Any) -> bool:
    from lightning.pytorch.strategies import ModelParallelStrategy

    return isinstance(strategy, ModelParallelStrategy)


def _is_fsdp1(strategy: Any) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)
