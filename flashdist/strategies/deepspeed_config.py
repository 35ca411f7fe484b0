"""Filling a user DeepSpeed config's ``"auto"`` values from the Task, the Trainer and the step plan.

Pure functions over dicts (no DeepSpeed, no Trainer), after the Hugging Face Trainer's
DeepSpeed integration (``HfTrainerDeepSpeedConfig.trainer_config_process``/``_finalize``):
``"auto"`` takes the harness's value; a concrete value must agree with it, or it is a
``ConfigError`` naming both. Filled:

- top level: ``train_micro_batch_size_per_gpu`` (the loader's batch size),
  ``gradient_accumulation_steps`` (the Trainer's), ``train_batch_size`` (micro × accumulation
  × data-parallel size), ``gradient_clipping`` (``Trainer(gradient_clip_val=...)``; unset
  becomes 0.0, no clipping, as under DDP and FSDP. The HF Trainer fills its own default
  ``max_grad_norm=1.0`` there; flashdist keeps Lightning's default so that switching the
  strategy changes nothing: set ``gradient_clip_val=1.0`` for HF's behaviour);
- ``fp16.enabled`` / ``bf16.enabled``: from ``Trainer(precision=...)`` ("16-*" / "bf16-*");
- ``zero_optimization``: ``reduce_bucket_size`` = hidden², ``stage3_prefetch_bucket_size`` =
  int(0.9 × hidden²), ``stage3_param_persistence_threshold`` = 10 × hidden, where hidden is
  the model's ``config.hidden_size`` (or ``max(config.hidden_sizes)``), else the largest
  in/out feature count of any ``nn.Linear``. Unlike HF, the stage-3 keys are filled at every
  stage (DeepSpeed ignores them below stage 3, and a leftover ``"auto"`` would fail its
  config validation);
- ``optimizer.params``: ``lr`` (Task's ``learning_rate``), ``betas``, ``eps`` (torch's
  defaults for the named type), ``weight_decay`` (Task's, else torch's default);
- ``scheduler.params``: ``total_num_steps`` (the plan's total), ``warmup_num_steps`` (1 for
  ``"auto"``, as HF fills it since DeepSpeed 0.19.6 refuses 0; a flashdist duration such as
  ``"0.1dur"`` or ``"1ep"`` is resolved by the plan), ``warmup_max_lr`` (lr),
  ``warmup_min_lr`` (0).

The fill runs twice. Before any process starts (``before_launch=True``), every value is
filled or checked whose inputs the launching process knows: all but the batch and step counts
always, the batch counts when the training loader's batch size is known there, and the step
counts when the step plan is (the loader, or a DataModule's ``train_loader_before_launch()``,
runtime/planning.py); every ``"auto"`` that cannot be derived is named in one ``ConfigError``.
Inside each rank the same fill runs with the real loader and plan, for what was unknown before.

An optimizer named both on the Task (``optimizer=`` passed at all, even the default name)
and in the config is refused, as is a scheduler in both: one of them would be silently
ignored. A Task without ``optimizer=`` takes the config's.

DeepSpeed's own schedules apply ``warmup_min_lr`` to the first update and reach
``f(step)`` one update later than torch's, so ``WarmupDecayLR`` with ``total_num_steps`` = the
plan's total ends at ``warmup_max_lr / (total - warmup)``, not 0. flashdist fills the total
as the Hugging Face Trainer does and keeps DeepSpeed's definition rather than shifting it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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
HIDDEN_SIZE_KEYS = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")
# Need the training loader's batch size, and the step plan: known before launch only when the
# launching process can see the loader (else filled inside each rank).
BATCH_KEYS = ("train_micro_batch_size_per_gpu", "train_batch_size")
SCHEDULE_KEYS = ("scheduler.params.total_num_steps", "scheduler.params.warmup_num_steps")
PLANNED_KEYS = (*BATCH_KEYS, *SCHEDULE_KEYS)


@dataclass(frozen=True)
class AutoValues:
    """What the harness knows that a DeepSpeed config may leave as ``"auto"``.

    ``plan`` and ``micro_batch_size`` may be None before launch (the launching process cannot
    see the loader): the values that need them are then left for the in-rank fill.
    """

    learning_rate: float | None
    weight_decay: float | None
    micro_batch_size: int | None
    accumulate_grad_batches: int
    data_parallel_size: int | None
    plan: StepPlan | None
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    hidden_size: int | None = None
    hidden_size_source: str = "no nn.Linear or config.hidden_size in the model"

    @classmethod
    def from_task(
        cls, task: Any, plan: StepPlan | None, micro_batch_size: int | None, *, precision: str = "32-true",
        gradient_clip_val: float | None = None, data_parallel_size: int | None = None,
    ) -> AutoValues:
        hidden, source = hidden_size_of(task)
        return cls(
            learning_rate=getattr(task, "learning_rate", None),
            weight_decay=getattr(task, "weight_decay", None),
            micro_batch_size=micro_batch_size,
            accumulate_grad_batches=plan.accumulate_grad_batches if plan is not None else 1,
            data_parallel_size=plan.data_parallel_size if plan is not None else data_parallel_size,
            plan=plan,
            precision=str(precision),
            gradient_clip_val=gradient_clip_val,
            hidden_size=hidden,
            hidden_size_source=source,
        )


def hidden_size_of(module: nn.Module) -> tuple[int | None, str]:
    """The hidden size the ZeRO bucket sizes derive from, and where it came from.

    The outermost ``config.hidden_size`` (or ``max(config.hidden_sizes)``, or a
    ``config.text_config``'s), as the HF Trainer reads it; else the largest in/out feature
    count of any ``nn.Linear``.

    Example:
        >>> hidden_size_of(nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 2)))
        (32, 'the largest nn.Linear in/out features')
    """
    for name, child in module.named_modules():
        config = getattr(child, "config", None)
        for node, label in ((config, "config"), (getattr(config, "text_config", None), "config.text_config")):
            size = getattr(node, "hidden_size", None)
            if isinstance(size, int):
                return size, f"{name + '.' if name else ''}{label}.hidden_size"
            sizes = getattr(node, "hidden_sizes", None)
            if isinstance(sizes, (list, tuple)) and sizes:
                return int(max(sizes)), f"max({name + '.' if name else ''}{label}.hidden_sizes)"
    widths = [max(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]
    if widths:
        return max(widths), "the largest nn.Linear in/out features"
    return None, "no nn.Linear or config.hidden_size in the model"


def task_optimizer_if_given(task: Any) -> OptimizerSpec | None:
    """The Task's optimizer spec when ``optimizer=`` was passed at all, even the default name; else None.

    Example:
        >>> from types import SimpleNamespace
        >>> task_optimizer_if_given(SimpleNamespace(optimizer_given=False, optimizer_spec="adam")) is None
        True
    """
    if not getattr(task, "optimizer_given", True):
        return None
    return getattr(task, "optimizer_spec", None)


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
    before_launch: bool = False,
) -> dict[str, Any]:
    """A copy of ``config`` with every ``"auto"`` filled and every concrete value checked.

    ``before_launch``: a None batch size or plan means "not known yet" (their keys stay as
    given, for the in-rank fill), not "not set".

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
    batch_known = micro is not None or not before_launch
    if batch_known:
        _fill(out, "train_micro_batch_size_per_gpu", micro, "the training DataLoader's batch_size")
        global_batch = micro * accumulate * values.data_parallel_size if micro is not None and values.data_parallel_size else None
        _fill(out, "train_batch_size", global_batch, "batch_size × accumulate_grad_batches × data-parallel size")
    _fill(out, "gradient_accumulation_steps", accumulate, "Trainer(accumulate_grad_batches=...)")
    _fill_clipping(out, values.gradient_clip_val)
    _fill_precision(out, values.precision)
    _fill_hidden_sizes(out, values)
    if "optimizer" in out:
        _check_optimizer_not_doubled(out["optimizer"], task_optimizer, task_has_scheduler)
        out["optimizer"] = _fill_optimizer(out["optimizer"], values)
    if "scheduler" in out:
        check_scheduler_not_doubled(out, task_has_scheduler)
        out["scheduler"] = _fill_scheduler(out["scheduler"], values)
    unknown = (() if batch_known else BATCH_KEYS) + (() if values.plan is not None else SCHEDULE_KEYS)
    leftovers = [path for path in _auto_paths(out) if path not in unknown]
    if leftovers:
        raise ConfigError(
            f"the DeepSpeed config has 'auto' values flashdist cannot fill: {leftovers}.",
            accepted=FILLABLE,
            hint="give these a concrete value.",
        )
    return out


def check_scheduler_not_doubled(config: Mapping[str, Any] | None, task_has_scheduler: bool) -> None:
    """Refuse a scheduler both in the DeepSpeed config and on the Task (the engine would step its
    own, Lightning the Task's). Needs no plan, so callers run it before any process launches.

    Example:
        >>> check_scheduler_not_doubled({"scheduler": {"type": "WarmupLR"}}, task_has_scheduler=True)
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: a scheduler is given both in the DeepSpeed config ('WarmupLR') and on the Task ...
    """
    section = config.get("scheduler") if isinstance(config, Mapping) else None
    if section is not None and task_has_scheduler:
        kind = section.get("type") if isinstance(section, Mapping) else section
        raise ConfigError(
            f"a scheduler is given both in the DeepSpeed config ({kind!r}) and on the Task (lr_scheduler=...).",
            hint="keep one: remove the config's 'scheduler' section or the Task's lr_scheduler.",
        )


FILLABLE = (
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "train_batch_size",
    "gradient_clipping",
    "fp16.enabled",
    "bf16.enabled",
    *(f"zero_optimization.{key}" for key in HIDDEN_SIZE_KEYS),
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


def _fill_clipping(out: dict[str, Any], gradient_clip_val: float | None) -> None:
    if out.get("gradient_clipping") == AUTO:
        # Lightning's default (None) clips nothing under DDP/FSDP; 0.0 is DeepSpeed's "off".
        out["gradient_clipping"] = float(gradient_clip_val) if gradient_clip_val else 0.0
    elif gradient_clip_val is not None:
        _fill(out, "gradient_clipping", float(gradient_clip_val), "Trainer(gradient_clip_val=...)")


def _fill_precision(out: dict[str, Any], precision: str) -> None:
    for section, prefix in (("fp16", "16-"), ("bf16", "bf16-")):
        node = out.get(section)
        if not isinstance(node, dict) or "enabled" not in node:
            continue
        wanted = precision.startswith(prefix) or precision == prefix.rstrip("-")
        given = node["enabled"]
        if given == AUTO:
            node["enabled"] = wanted
        elif bool(given) != wanted:
            raise ConfigError(
                f"DeepSpeed config {section}.enabled={given!r} contradicts Trainer(precision={precision!r}).",
                hint=f"write {section}.enabled: 'auto' to take it from the Trainer, or set Trainer(precision=...) to match.",
            )


def _fill_hidden_sizes(out: dict[str, Any], values: AutoValues) -> None:
    zero = out.get("zero_optimization")
    if not isinstance(zero, dict):
        return
    auto_keys = [key for key in HIDDEN_SIZE_KEYS if zero.get(key) == AUTO]
    if not auto_keys:
        return
    hidden = values.hidden_size
    if hidden is None:
        raise ConfigError(
            f"DeepSpeed config zero_optimization {auto_keys} = 'auto' derive from the model's hidden size, and there is "
            f"none ({values.hidden_size_source}).",
            hint="give these keys integer values, e.g. reduce_bucket_size: 5.0e8.",
        )
    derived = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    for key in auto_keys:
        zero[key] = derived[key]


def _check_optimizer_not_doubled(section: Mapping[str, Any], task_optimizer: OptimizerSpec | None, task_has_scheduler: bool) -> None:
    if task_optimizer is not None:
        raise ConfigError(
            f"an optimizer is given both in the DeepSpeed config ({section.get('type')!r}) and on the Task "
            f"(optimizer={task_optimizer.describe()}).",
            hint="keep one: remove the config's 'optimizer' section, or do not pass optimizer= to the Task.",
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
    if plan is not None:
        _fill(params, "total_num_steps", plan.planned_total_steps, "the step plan's total optimizer steps", "scheduler.params.")
        if "warmup_num_steps" in params:
            warmup = params["warmup_num_steps"]
            # DeepSpeed >= 0.19.6 refuses 0 warmup steps; the HF Trainer fills max(1, warmup).
            params["warmup_num_steps"] = 1 if warmup == AUTO else plan.resolve_steps(warmup, what="scheduler.params.warmup_num_steps")
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


def _auto_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _auto_paths(value, f"{prefix}{key}.")
    elif node == AUTO:
        yield prefix.rstrip(".")
