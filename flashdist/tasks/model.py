"""``Task``: a LightningModule whose optimizer and LR scheduler come from the registries."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torchmetrics
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn

from flashdist.tasks.recipes import accessors
from flashdist.errors import ConfigError
from flashdist.optim import LR_SCHEDULERS, OPTIMIZERS
from flashdist.optim.build import SchedulerStepCallError, dry_run, instantiate_scheduler, resolve_scheduler_kwargs, schedule_length_conflict
from flashdist.optim.compiled import compile_optimizer_step, tensor_lr_kwargs, wants_tensor_lr
from flashdist.optim.resolved import resolve_schedule
from flashdist.optim.specs import check_learning_rate, normalize_optimizer, normalize_scheduler
from flashdist.strategies.base import unwrap_optimizer
from flashdist.tasks.grouping import grouping_for
from flashdist.tasks.log_cadence import monitors_training_metric, shown_bar_refresh_rate, step_metrics_due

MetricsArg = torchmetrics.Metric | Mapping[str, torchmetrics.Metric] | Sequence[torchmetrics.Metric] | None
# The forms optimizer= / lr_scheduler= accept (flashdist.optim.specs normalizes them). Spelled as
# unions rather than Any so jsonargparse reads a YAML/CLI list `[adam, {amsgrad: true}]` as a tuple,
# refuses a mapping at parse time with its key path, and shows the forms in `flashdist fit --help`.
OptimizerArg = str | tuple | list | Callable[..., Any]
SchedulerArg = str | tuple | list | Callable[..., Any] | None
DEFAULT_OPTIMIZER = "Adam"


class Task(LightningModule):
    """Wrap any ``nn.Module`` with a loss, metrics, and a registry-built optimizer and scheduler.

    Batches are ``(inputs, targets)`` or dicts with ``"input"`` / ``"target"``. Logs
    ``train_loss``, ``val_loss`` and ``val_<metric>``. Every spec is validated here, at
    construction, with a dry build on a dummy parameter.

    Example:
        >>> task = Task(nn.Linear(4, 2), loss_fn=nn.functional.cross_entropy, learning_rate=1e-3,
        ...             optimizer=("adamw", {"weight_decay": 0.01}), lr_scheduler=("steplr", {"step_size": 10}))
        >>> task.optimizer_spec.describe()
        'adamw(weight_decay=0.01)'
    """

    optimizers, lr_schedulers = accessors(OPTIMIZERS, LR_SCHEDULERS)

    def __init__(
        self,
        model: nn.Module | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        learning_rate: float | None = None,
        optimizer: OptimizerArg | None = None,
        lr_scheduler: SchedulerArg = None,
        metrics: MetricsArg = None,
        weight_decay: float | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        layer_decay: float | None = None,
    ):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.learning_rate = check_learning_rate(learning_rate, where=f" on the {type(self).__name__}")
        if weight_decay is not None and (
            isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not 0 <= weight_decay < math.inf
        ):
            raise ConfigError(f"weight_decay={weight_decay!r} on the {type(self).__name__} must be a finite non-negative number.")
        self.weight_decay = weight_decay
        cls = type(self)
        # Whether optimizer= was passed at all (a DeepSpeed config's optimizer may only fill
        # in for a Task that names none); None means DEFAULT_OPTIMIZER.
        self.optimizer_given = optimizer is not None
        self.optimizer_spec = normalize_optimizer(DEFAULT_OPTIMIZER if optimizer is None else optimizer, cls.optimizers)
        self.scheduler_spec = normalize_scheduler(lr_scheduler, cls.lr_schedulers)
        if weight_decay is not None and "weight_decay" in self.optimizer_spec.kwargs:
            raise ConfigError(
                f"weight_decay={weight_decay} given both to the Task and in the optimizer kwargs.",
                hint="Task(weight_decay=...) decays weights but not biases/norms; use one place.",
            )
        self._step_call_refusal: SchedulerStepCallError | None = None
        try:
            dry_run(self.optimizer_spec, self.scheduler_spec, learning_rate, custom_step=self._steps_schedulers_itself())
        except SchedulerStepCallError as refusal:
            # Everything else built. Lightning's habit is to assign model.lr_scheduler_step after
            # construction: the refusal waits for fit, where such an override is visible (before_launch).
            self._step_call_refusal = refusal
        self.grouping = grouping_for(self, param_groups, layer_decay)
        self.val_metrics = torchmetrics.MetricCollection(_as_metric_dict(metrics), prefix="val_")
        # trainer.test's own copies (Flash's tasks test as they validate); metric states are not
        # persistent, so checkpoints do not change.
        self.test_metrics = self.val_metrics.clone(prefix="test_")
        # Whether a callback of this fit monitors a training metric (tasks/log_cadence.py): decided
        # once per fit at on_train_start, not by scanning trainer.callbacks every step; None until then.
        self._training_metric_monitored: bool | None = None

    @classmethod
    def available_optimizers(cls) -> list[str]:
        """Names accepted by ``optimizer=``, recipes registered on this class included."""
        return cls.optimizers.names()

    @classmethod
    def available_lr_schedulers(cls) -> list[str]:
        """Names accepted by ``lr_scheduler=``, recipes registered on this class included."""
        return cls.lr_schedulers.names()

    # ---- the training loop -------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` on the module around every hook it calls: 46 times a
        # step, each through nn.Module.__setattr__'s parameter/buffer/module checks (about 2 µs
        # each here, ~0.8 µs saved per call). An attribute already in the instance dict cannot also
        # be a parameter, buffer or submodule (nn.Module keeps them exclusive), so for any value but
        # a Parameter or Module the plain assignment is what nn.Module would end up doing.
        if name in self.__dict__ and not isinstance(value, (nn.Parameter, nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, inputs: Any) -> torch.Tensor:
        model = self.model  # one nn.Module.__getattr__ per step, not two
        if model is None:
            raise ConfigError(f"{type(self).__name__} has no model.", hint="pass model= (any nn.Module).")
        return model(inputs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = self.unpack_batch(batch)
        loss = self.compute_loss(self(inputs), targets)
        self.log_step_metrics({"train_loss": loss}, batch_idx)
        return loss

    def step_metrics_are_due(self, batch_idx: int) -> bool:
        """Whether this training step's metrics have a reader (tasks/log_cadence.py): the same answer on every rank.

        A subclass that must reduce a metric across the ranks before logging it asks this first,
        so the reduction is a collective every rank joins, and only on the steps it is logged.
        """
        trainer = self.trainer
        monitored = self._training_metric_monitored
        if monitored is None:  # a subclass's on_train_start did not call ours: decide now, once
            monitored = self._training_metric_monitored = monitors_training_metric(trainer)
        return step_metrics_due(trainer, batch_idx, monitored)

    def log_step_metrics(self, metrics: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """``self.log`` this training step's values (tensors) only on the steps something reads them (tasks/log_cadence.py).

        Example (in a subclass's ``training_step``):
            >>> self.log_step_metrics({"train_loss": loss}, batch_idx)  # doctest: +SKIP
        """
        if not self.step_metrics_are_due(batch_idx):
            return
        bar = shown_bar_refresh_rate(self.trainer) > 0
        for name, value in metrics.items():
            # Lightning reads every prog_bar value on the host at the end of every batch, logged
            # then or not: for a shown bar, a host copy made now (the one device read, at the bar's
            # cadence); without a bar, not on the bar at all.
            self.log(name, value.detach().cpu() if bar else value, prog_bar=bar)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val_", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """``trainer.test``: what validation computes, as ``test_loss`` and ``test_<metric>``."""
        self._evaluate(batch, "test_", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """``trainer.predict``: the model's outputs for a batch of inputs, or of ``(inputs, targets)`` as the fit's loaders give."""
        if isinstance(batch, torch.Tensor):
            return self(batch)
        inputs, _ = self.unpack_batch(batch)
        return self(inputs)

    def _evaluate(self, batch: Any, prefix: str, metrics: torchmetrics.MetricCollection) -> None:
        inputs, targets = self.unpack_batch(batch)
        outputs = self(inputs)
        self.log(f"{prefix}loss", self.compute_loss(outputs, targets), prog_bar=True, sync_dist=True)
        if len(metrics):
            metrics.update(outputs, targets)
            self.log_dict(metrics, prog_bar=True)

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is None:
            raise ConfigError(f"{type(self).__name__} has no loss_fn.", hint="pass loss_fn=, e.g. torch.nn.functional.mse_loss.")
        return self.loss_fn(outputs, targets)

    @staticmethod
    def unpack_batch(batch: Any) -> tuple[Any, Any]:
        # tuple/list first: a concrete isinstance, where isinstance(batch, Mapping) goes through
        # the ABC machinery on every step.
        if not isinstance(batch, (tuple, list)) and isinstance(batch, Mapping):
            return batch["input"], batch["target"]
        inputs, targets = batch
        return inputs, targets

    # ---- optimizer and scheduler -------------------------------------------------------
    def configure_optimizers(self) -> Any:
        run = _fit_run(self.trainer)  # the plan and the strategy route of this fit
        optimizer = run.route.build_optimizer(self, self.optimizer_spec, self.learning_rate, self.weight_decay, self.grouping)
        compile_kwargs = run.compile_optimizer  # flashdist.Trainer(compile_optimizer=...): torch.compile kwargs, or None
        if self.scheduler_spec is None:
            if compile_kwargs is not None:
                compile_optimizer_step(optimizer, **compile_kwargs)
            return optimizer
        spec = self.scheduler_spec
        kwargs = None
        if spec.entry is not None and not spec.entry.is_recipe:
            kwargs = resolve_scheduler_kwargs(spec, optimizer, run.plan)
            self._check_schedule_length(spec, kwargs, run.plan.planned_total_steps, run.strict_ledger)
        build_kwargs = kwargs
        if wants_tensor_lr(optimizer, compiled_step=compile_kwargs is not None):
            target = spec.entry.target if spec.entry is not None and not spec.entry.is_recipe else None
            build_kwargs = tensor_lr_kwargs(optimizer, target, kwargs, compile_kwargs is not None, spec.name)
        scheduler, config = instantiate_scheduler(optimizer, spec, build_kwargs, custom_step=self._steps_schedulers_itself())
        if compile_kwargs is not None:  # after the scheduler, which wraps optimizer.step itself
            compile_optimizer_step(optimizer, **compile_kwargs)
        # the schedule's identity (checked on resume) is the same compiled or not: LRs are the same
        run.schedule = resolve_schedule(spec, kwargs, config)
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _check_schedule_length(self, spec: Any, kwargs: dict[str, Any], planned_total_steps: int, strict: bool) -> None:
        """A schedule length the user wrote that the plan contradicts: refused, or a warning under strict_ledger=False."""
        problem = schedule_length_conflict(spec, kwargs, planned_total_steps)
        if problem is None:
            return
        if not strict:
            rank_zero_warn(f"{problem} Kept (strict_ledger=False).", category=UserWarning, stacklevel=3)
            return
        raise ConfigError(problem, hint="leave the total out: flashdist fills it from the plan (or pass Trainer(strict_ledger=False) to keep yours).")

    def before_launch(self) -> None:
        """The checks that need the module as ``fit`` is given it; ``flashdist.Trainer.fit`` calls it before any rank starts.

        A scheduler whose ``step()`` Lightning cannot call is refused here unless an
        ``lr_scheduler_step`` override now drives it (one assigned after construction included).
        """
        if self._step_call_refusal is not None and not self._steps_schedulers_itself():
            raise self._step_call_refusal

    def _steps_schedulers_itself(self) -> bool:
        """The user overrides ``lr_scheduler_step`` (on their subclass, or on this instance, as
        Lightning's own tests do): their override decides how ``step()`` is called, and
        Lightning skips its scheduler check for them; so does flashdist's."""
        return type(self).lr_scheduler_step is not Task.lr_scheduler_step or "lr_scheduler_step" in vars(self)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # Lightning's own rule, extended to metric-driven schedules that are not
        # ReduceLROnPlateau subclasses (transformers' GreedyLR).
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    # ---- optimizers with a train/eval mode (schedule-free) -------------------------------
    # They keep the weights at a training point and swap in their average for evaluation: the
    # harness calls optimizer.train() / .eval() at every switch, as their docs ask. Lightning's
    # start/end hooks, not on_validation_model_train, which would replace Lightning's restore of
    # each submodule's own mode.
    def on_train_start(self) -> None:
        # The callbacks are fixed for the fit by now (configure_callbacks merged): who monitors a
        # training metric is decided here once, for log_step_metrics' every-step check.
        self._training_metric_monitored = monitors_training_metric(self.trainer)

    def on_train_epoch_start(self) -> None:
        switch_optimizer_mode(self._trainer, "train")

    def on_validation_start(self) -> None:
        switch_optimizer_mode(self._trainer, "eval")

    def on_validation_end(self) -> None:
        if self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING:
            switch_optimizer_mode(self._trainer, "train")

    def on_test_start(self) -> None:
        switch_optimizer_mode(self._trainer, "eval")

    def on_predict_start(self) -> None:
        switch_optimizer_mode(self._trainer, "eval")

    def on_train_end(self) -> None:
        switch_optimizer_mode(self._trainer, "eval")  # the fitted model is the evaluation weights
        self._training_metric_monitored = None  # the next fit may have other callbacks


def switch_optimizer_mode(trainer: Any, mode: str) -> None:
    """Call ``train()`` / ``eval()`` on every optimizer of the fit that has them (schedule-free ones).

    Example:
        >>> switch_optimizer_mode(trainer, "eval")  # doctest: +SKIP
    """
    for optimizer in getattr(trainer, "optimizers", None) or ():
        switch = getattr(unwrap_optimizer(optimizer), mode, None)
        if callable(switch):
            switch()


def _fit_run(trainer: Any) -> Any:
    """The ``FitRun`` of the fit ``trainer`` runs (flashdist.Trainer makes one per fit)."""
    run = getattr(trainer, "fit_run", None)
    if run is None:
        raise ConfigError(
            f"a flashdist Task plans its optimizer and LR schedule with flashdist.Trainer's step plan; "
            f"it is being fitted by {type(trainer).__module__}.{type(trainer).__name__}.",
            hint="fit it with flashdist.Trainer (a drop-in lightning.Trainer with the same arguments).",
        )
    return run


def _as_metric_dict(metrics: MetricsArg) -> dict[str, torchmetrics.Metric]:
    if metrics is None:
        return {}
    if isinstance(metrics, torchmetrics.Metric):
        return {_metric_name(metrics): metrics}
    if isinstance(metrics, Mapping):
        return dict(metrics)
    if isinstance(metrics, Sequence):
        return {_metric_name(m): m for m in metrics}
    raise ConfigError(f"metrics={metrics!r} is not a torchmetrics Metric, a dict or a list of them.")


def _metric_name(metric: torchmetrics.Metric) -> str:
    name = type(metric).__name__
    for prefix in ("Multiclass", "Binary", "Multilabel"):
        name = name.removeprefix(prefix)
    return name.lower()
