"""Filling a user DeepSpeed config's ``"auto"`` values from the Task and the step plan.

Pure functions over dicts (no DeepSpeed, no Trainer), after the Hugging Face Trainer's
DeepSpeed integration (``HfTrainerDeepSpeedConfig.trainer_config_process``/``_finalize``):
``"auto"`` takes the harness's value; a concrete value must agree with it, or it is a
``ConfigError`` naming both. Filled:

- top level: ``train_micro_batch_size_per_gpu`` (the loader's batch size),
  ``gradient_accumulation_steps`` (the Trainer's), ``train_batch_size`` (micro × accumulation
  × data-parallel size);
- ``optimizer.params``: ``lr`` (Task's ``learning_rate``), ``betas``, ``eps`` (torch's
  defaults for the named type), ``weight_decay`` (Task's, else torch's default);
- ``scheduler.params``: ``total_num_steps`` (the plan's total), ``warmup_num_steps`` (0, as
  HF's default; a flashdist duration such as ``"0.1dur"`` or ``"1ep"`` is resolved by the
  plan), ``warmup_max_lr`` (lr), ``warmup_min_lr`` (0).

An optimizer named both on the Task and in the config, or a scheduler in both, is refused:
one of them would be silently ignored.

DeepSpeed's own schedules apply ``warmup_min_lr`` to the first update and reach
``f(step)`` one update later than torch's, so ``WarmupDecayLR`` with ``total_num_steps`` = the
plan's total ends at ``warmup_max_lr / (total - warmup)``, not 0. flashdist fills the total
as the Hugging Face Trainer does and keeps DeepSpeed's definition rather than shifting it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from flashdist.errors import ConfigError
from flashdist.optim.specs import OptimizerSpec
from flashdist.plan import StepPlan

AUTO = "auto"
_TORCH_BY_DS_TYPE: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


@dataclass(frozen=True)
class AutoValues:
    """What the harness knows that a DeepSpeed config may leave as ``"auto"``."""

    learning_rate: float | None
    weight_decay: float | None
    micro_batch_size: int | None
    accumulate_grad_batches: int
    data_parallel_size: int
    plan: StepPlan

    @classmethod
    def from_task(cls, task: Any, plan: StepPlan, micro_batch_size: int | None) -> AutoValues:
        return cls(
            learning_rate=getattr(task, "learning_rate", None),
            weight_decay=getattr(task, "weight_decay", None),
            micro_batch_size=micro_batch_size,
            accumulate_grad_batches=plan.accumulate_grad_batches,
            data_parallel_size=plan.data_parallel_size,
            plan=plan,
        )


def is_offloaded(config: Mapping[str, Any]) -> bool:
    """Whether ZeRO keeps the optimizer state off the accelerator (CPU or NVMe).

    Example:
        >>> is_offloaded({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
        True
    """
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device") in ("cpu", "nvme")


def fill_auto_config(
    config: Mapping[str, Any],
    values: AutoValues,
    *,
    task_has_scheduler: bool = False,
    task_optimizer: OptimizerSpec | None = None,
) -> dict[str, Any]:
    """A copy of ``config`` with every ``"auto"`` filled and every concrete value checked.

    Example:
        >>> from flashdist.plan import plan_steps
        >>> plan = plan_steps(dataset_size=1000, batch_size=9, data_parallel_size=2, accumulate_grad_batches=3, max_epochs=3)
        >>> values = AutoValues(1e-3, None, 9, 3, 2, plan)
        >>> filled = fill_auto_config({"train_batch_size": "auto", "scheduler": {"type": "WarmupDecayLR",
        ...     "params": {"total_num_steps": "auto", "warmup_num_steps": "auto"}}}, values)
        >>> filled["train_batch_size"], filled["scheduler"]["params"]["total_num_steps"]
        (54, 57)
    """
    out = copy.deepcopy(dict(config))
    micro, accumulate = values.micro_batch_size, values.accumulate_grad_batches
    _fill(out, "train_micro_batch_size_per_gpu", micro, "the training DataLoader's batch_size")
    _fill(out, "gradient_accumulation_steps", accumulate, "Trainer(accumulate_grad_batches=...)")
    global_batch = micro * accumulate * values.data_parallel_size if micro is not None else None
    _fill(out, "train_batch_size", global_batch, "batch_size × accumulate_grad_batches × data-parallel size")
    if "optimizer" in out:
        _check_optimizer_not_doubled(out["optimizer"], task_optimizer, task_has_scheduler)
        out["optimizer"] = _fill_optimizer(out["optimizer"], values)
    if "scheduler" in out:
        if task_has_scheduler:
            raise ConfigError(
                f"a scheduler is given both in the DeepSpeed config ({out['scheduler'].get('type')!r}) and on the Task (lr_scheduler=...).",
                hint="keep one: remove the config's 'scheduler' section or the Task's lr_scheduler.",
            )
        out["scheduler"] = _fill_scheduler(out["scheduler"], values)
    leftovers = list(_auto_paths(out))
    if leftovers:
        raise ConfigError(
            f"the DeepSpeed config has 'auto' values flashdist cannot fill: {leftovers}.",
            accepted=FILLABLE,
            hint="give these a concrete value.",
        )
    return out


FILLABLE = (
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "train_batch_size",
    "optimizer.params.lr",
    "optimizer.params.betas",
    "optimizer.params.eps",
    "optimizer.params.weight_decay",
    "scheduler.params.total_num_steps",
    "scheduler.params.warmup_num_steps",
    "scheduler.params.warmup_max_lr",
    "scheduler.params.warmup_min_lr",
)


def _fill(section: dict[str, Any], key: str, value: Any, source: str, where: str = "") -> None:
    if key not in section:
        return
    given = section[key]
    if given == AUTO:
        if value is None:
            raise ConfigError(f"DeepSpeed config {where}{key}='auto' needs {source}, which is not set.", hint=f"set {source} or give {key} a value.")
        section[key] = value
    elif value is not None and not _same(given, value):
        raise ConfigError(
            f"DeepSpeed config {where}{key}={given!r} contradicts {source} = {value!r}.",
            hint=f"write {key}: 'auto' to take it from flashdist, or change {source}.",
        )


def _same(given: Any, value: Any) -> bool:
    if isinstance(value, tuple):
        return isinstance(given, (list, tuple)) and list(given) == list(value)
    return given == value


def _check_optimizer_not_doubled(section: Mapping[str, Any], task_optimizer: OptimizerSpec | None, task_has_scheduler: bool) -> None:
    if task_optimizer is not None:
        raise ConfigError(
            f"an optimizer is given both in the DeepSpeed config ({section.get('type')!r}) and on the Task ({task_optimizer.describe()}).",
            hint="keep one: remove the config's 'optimizer' section, or leave the Task's optimizer= at its default.",
        )
    if task_has_scheduler:
        raise ConfigError(
            f"the DeepSpeed config names an optimizer ({section.get('type')!r}), so Lightning never builds the Task's lr_scheduler.",
            hint="put the schedule in the config's 'scheduler' section (auto values are filled), or move the optimizer to the Task.",
        )


def _fill_optimizer(section: Mapping[str, Any], values: AutoValues) -> dict[str, Any]:
    out = copy.deepcopy(dict(section))
    params = dict(out.get("params") or {})
    defaults = _torch_defaults(str(out.get("type", "")))
    weight_decay = values.weight_decay if values.weight_decay is not None else defaults.get("weight_decay")
    _fill(params, "lr", values.learning_rate, "Task(learning_rate=...)", "optimizer.params.")
    _fill(params, "weight_decay", weight_decay, "Task(weight_decay=...)" if values.weight_decay is not None else "torch's default", "optimizer.params.")
    for key in ("betas", "eps"):
        if params.get(key) == AUTO:
            _fill(params, key, defaults.get(key), f"torch's default for {out.get('type')}", "optimizer.params.")
    out["params"] = params
    return out


def _fill_scheduler(section: Mapping[str, Any], values: AutoValues) -> dict[str, Any]:
    out = copy.deepcopy(dict(section))
    params = dict(out.get("params") or {})
    plan = values.plan
    _fill(params, "total_num_steps", plan.planned_total_steps, "the step plan's total optimizer steps", "scheduler.params.")
    if "warmup_num_steps" in params:
        warmup = params["warmup_num_steps"]
        params["warmup_num_steps"] = 0 if warmup == AUTO else plan.resolve_steps(warmup, what="scheduler.params.warmup_num_steps")
    _fill(params, "warmup_max_lr", values.learning_rate, "Task(learning_rate=...)", "scheduler.params.")
    if params.get("warmup_min_lr") == AUTO:
        params["warmup_min_lr"] = 0.0
    out["params"] = params
    return out


def _torch_defaults(ds_type: str) -> dict[str, Any]:
    torch_class = _TORCH_BY_DS_TYPE.get(ds_type.lower())
    if torch_class is None:
        return {}
    params = inspect.signature(torch_class).parameters
    return {k: params[k].default for k in ("betas", "eps", "weight_decay") if k in params}


def _auto_paths(node: Any, prefix: str = "") -> Any:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _auto_paths(value, f"{prefix}{key}.")
    elif node == AUTO:
        yield prefix.rstrip(".")
