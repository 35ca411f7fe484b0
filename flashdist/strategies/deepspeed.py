"""DeepSpeed under flashdist: CPU-capable strategy, per-epoch accumulation, optimizer routing.

Accumulation semantics (the same as DDP and FSDP, and as :mod:`flashdist.plan`'s
``"per_epoch"``): an optimizer update happens after every ``accumulate_grad_batches``
micro-batches *and* at the end of every epoch on a partial window. Left alone, Lightning and
DeepSpeed disagree with that and with each other: Lightning steps its scheduler only on full
windows inside an epoch (54 steps for 1000 samples, batch 9, accumulation 3, 3 epochs, 2 ranks)
while the engine counts micro-steps across epoch boundaries (56); the plan says 57. So:

- the strategy tells Lightning it does *not* own accumulation, so Lightning decides the
  boundary exactly as under DDP (epoch end included), calls ``engine.step()`` only there,
  and steps the scheduler and ``global_step`` once per real update;
- before every micro-batch it tells the engine whether that micro-batch closes a window
  (``engine.set_gradient_accumulation_boundary``), from the same Lightning decision, so the
  engine reduces gradients and updates exactly there;
- Lightning already divides the loss by ``accumulate_grad_batches``; the engine's own division
  is turned off (``scale_wrt_gas=False``) so gradients equal DDP's, also for SGD.

On CPU, Lightning refuses DeepSpeed; :class:`CPUDeepSpeedStrategy` skips the CUDA and
device-index checks and gives each rank a CPU root device indexed by its local rank.
On CUDA, :class:`FlashDeepSpeedStrategy` is Lightning's strategy with only the accumulation
change above.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.strategies.ddp import DDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from flashdist.compat.deepspeed import ZeroStepCounter, forget_destroyed_world_group, zero_step_grad_norm
from flashdist.compat.lightning import init_deepspeed_distributed, private_override, should_accumulate
from flashdist.errors import ConfigError
from flashdist.optim.specs import OptimizerSpec
from flashdist.strategies import register_route, route_for
from flashdist.strategies.base import RouteAware, StepCounter, StrategyRoute, unwrap_optimizer
from flashdist.strategies.grad_norm import PendingNorm
from flashdist.strategies.deepspeed_config import AutoValues, fill_auto_config, is_offloaded, task_optimizer_if_given

# Adam-family names the route may serve with DeepSpeed's kernels, and whether they decouple
# weight decay (AdamW) or add it to the gradient (Adam's L2).
_ADAM_FAMILY: dict[str, bool] = {"adam": False, "adamw": True}
# DeepSpeed kernels without a CPU build (its CPU accelerator builds fused_adam, cpu_adam,
# cpu_adagrad and cpu_lion, but no lamb or fused lion).
_CUDA_ONLY = frozenset({"FusedLamb", "FusedLion"})


class FlashDeepSpeedStrategy(DeepSpeedStrategy, RouteAware):  # mixin last: a plain DeepSpeedStrategy can be adopted
    """Lightning's DeepSpeed strategy with flashdist's per-epoch accumulation and "auto" config filling.

    Example:
        >>> strategy = FlashDeepSpeedStrategy(stage=2)  # doctest: +SKIP
    """

    strategy_name = "deepspeed"

    @property
    def handles_gradient_accumulation(self) -> bool:
        # Lightning then decides every window boundary itself (epoch end included) and calls
        # engine.step() only there; the engine is told the same boundary in training_step.
        return False

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        trainer = self.lightning_module.trainer
        if trainer.training and trainer.accumulate_grad_batches > 1:
            closes_window = not should_accumulate(trainer)
            self.model.set_gradient_accumulation_boundary(closes_window)
        return super().training_step(*args, **kwargs)

    @contextlib.contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        # The engine skips the gradient reduction itself on micro-batches that do not close a
        # window (the boundary flag set in training_step); its no_sync() refuses ZeRO-2/3.
        yield

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Lightning's closure already divided the loss by accumulate_grad_batches.
        kwargs.setdefault("scale_wrt_gas", False)
        return super().backward(closure_loss, optimizer, *args, **kwargs)

    @private_override(DeepSpeedStrategy, "the only place Lightning fills the config's batch and accumulation values")
    def _format_batch_size_and_grad_accum_config(self) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        trainer = self.lightning_module.trainer
        task = self.lightning_module
        plan = self.route.plan() if self.route is not None and trainer.state.fn == TrainerFn.FITTING else None
        if plan is None:  # not fitting, or not under flashdist's Trainer (which hands the route the plan)
            return super()._format_batch_size_and_grad_accum_config()
        values = AutoValues.from_task(
            task, plan, micro_batch_size=_loader_batch_size(trainer), precision=trainer.precision, gradient_clip_val=trainer.gradient_clip_val
        )
        self.config = fill_auto_config(self.config, values, task_has_scheduler=getattr(task, "scheduler_spec", None) is not None,
                                       task_optimizer=task_optimizer_if_given(task))
        # Lightning refuses a config that names gradient_accumulation_steps; the filled value
        # equals the Trainer's (fill_auto_config checked), so hand it back to Lightning to set.
        self.config.pop("gradient_accumulation_steps", None)
        super()._format_batch_size_and_grad_accum_config()

    @private_override(DeepSpeedStrategy, "where Lightning calls deepspeed.initialize; no hook passes it param groups")
    def _setup_model_and_optimizer(self, model: Any, optimizer: Any, lr_scheduler: Any = None) -> tuple[Any, Any]:
        forget_destroyed_world_group()  # a process group destroyed since an earlier DeepSpeed fit in this process
        task = self.lightning_module
        grouping = getattr(task, "grouping", None)
        if optimizer is None and (getattr(task, "weight_decay", None) is not None or (grouping is not None and grouping.active)):
            # The config's optimizer would see one flat group; keep biases/norms undecayed and the Task's groups.
            return self._initialize_with_groups(model, lr_scheduler)
        return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)

    def _initialize_with_groups(self, model: Any, lr_scheduler: Any) -> tuple[Any, Any]:
        import argparse

        import deepspeed

        task = self.lightning_module
        route = self.route if self.route is not None else route_for(self)
        groups = route.param_groups(model, task.weight_decay, getattr(task, "grouping", None))
        base_lr = ((self.config.get("optimizer") or {}).get("params") or {}).get("lr")
        for group in groups:  # the config's optimizer then builds each group at its scaled LR
            if group.get("lr_scale", 1.0) != 1.0 and isinstance(base_lr, (int, float)):
                group["lr"] = base_lr * group["lr_scale"]
        engine, optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.root_device.index),
            config=self.config,
            model=model,
            model_parameters=groups,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, optimizer


class CPUDeepSpeedMixin(DeepSpeedStrategy):
    """Only what lets Lightning's ``DeepSpeedStrategy`` run on CPU processes (gloo); listed first.

    Kept apart from flashdist's training changes so ``flashdist bench fit`` can run plain
    Lightning's DeepSpeed strategy on CPU (``class S(CPUDeepSpeedMixin, DeepSpeedStrategy)``).
    A subclass of ``DeepSpeedStrategy`` rather than a bare mixin: listed first, a bare mixin
    would become the layout base of ``CPUDeepSpeedStrategy``, whose objects then differ in
    layout from ``DeepSpeedStrategy``'s, and a user's strategy object could not be adopted
    (``compat.adopt_subclass``: "__class__ assignment: object layout differs").
    """

    def setup_environment(self) -> None:
        # Skip DeepSpeedStrategy's "only supported on CUDA GPUs" refusal.
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        from lightning.fabric.utilities.seed import reset_seed

        # Skip the device-index validation: CPU devices have no index to validate.
        reset_seed()
        self.set_world_ranks()
        init_deepspeed_distributed(self)

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed reads the rank's device from its index. Being a CPU device, it also makes
        # Lightning's own backend rule (process_group_backend=, else torch's backend for the
        # root device's type) choose gloo: no override of the backend choice is needed.
        return torch.device("cpu", self.local_rank)


class CPUDeepSpeedStrategy(CPUDeepSpeedMixin, FlashDeepSpeedStrategy):
    """DeepSpeed on CPU processes (gloo), for CI and laptops; identical training logic.

    Example:
        >>> trainer = flashdist.Trainer(strategy="deepspeed_stage_2", accelerator="cpu", devices=2)  # doctest: +SKIP
    """


class DeepSpeedRoute(StrategyRoute):
    """Which optimizer class serves the spec under DeepSpeed (see the module docstring)."""

    name = "deepspeed"

    def optimizer_class(self, spec: OptimizerSpec, params: list[Any]) -> tuple[Any, str]:
        return choose_deepspeed_optimizer(
            spec, offloaded=is_offloaded(self.strategy.config or {}), on_cuda=self.strategy.root_device.type == "cuda"
        )

    def build_optimizer(
        self, module: Any, spec: OptimizerSpec, learning_rate: float | None, weight_decay: float | None, grouping: Any = None
    ) -> Any:
        optimizer = super().build_optimizer(module, spec, learning_rate, weight_decay, grouping)
        if is_offloaded(self.strategy.config or {}) and not type(optimizer).__name__.startswith("DeepSpeedCPU"):
            # ZeRO-Offload refuses a torch optimizer unless told otherwise; it then runs it on
            # the CPU copy of the weights (slow, but what the user asked for).
            self.strategy.config["zero_force_ds_cpu_optimizer"] = False
            rank_zero_warn(f"flashdist: {type(optimizer).__name__} is not a DeepSpeed CPU optimizer; ZeRO-Offload will run it unfused (slow).")
        return optimizer

    def full_state_dict(self, module: Any) -> dict[str, torch.Tensor] | None:
        if not getattr(self.strategy, "zero_stage_3", False):
            return super().full_state_dict(module)
        import deepspeed

        # ZeRO-3 keeps a 1/world slice of each parameter per rank; GatheredParameters
        # all-gathers them for the block (every rank), read-only (modifier_rank=None).
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return super().full_state_dict(module)

    def record_grad_norm(self, module: Any) -> None:
        # The gradients live in ZeRO's partitioned buffers until engine.step(), which computes the norm.
        pass

    def grad_norm_entry(self) -> PendingNorm | None:
        # Called once per update, after the engine's step computed the norm (still a tensor there:
        # read with the batch, not now).
        engine = getattr(self.strategy, "deepspeed_engine", None)
        norm = zero_step_grad_norm(engine.optimizer) if engine is not None else None
        if norm is None:
            self._grad_norm = None
        elif isinstance(norm, torch.Tensor):
            self._grad_norm = self._norms.add(norm.detach().clone())  # a copy: the engine may reuse its tensor
        else:
            self._grad_norm = PendingNorm()
            self._grad_norm.value = float(norm)
        return self._grad_norm

    def grad_norm(self) -> float | None:
        self.finish_grad_norms()
        if self._grad_norm is None:  # a rank that keeps no lr.csv: the engine's value, read now (a logged step)
            engine = getattr(self.strategy, "deepspeed_engine", None)
            norm = zero_step_grad_norm(engine.optimizer) if engine is not None else None
            return None if norm is None else float(norm)
        return self._grad_norm.value

    def register_step_counter(self, optimizer: Any, count: StepCounter) -> Any:
        # ZeRO's wrapper steps the torch optimizer once per param group (stages 1-2) or per
        # sub-group (stage 3); the wrapper's own step() is the one real update (unless fp16
        # overflowed, which the wrapper reports in .overflow).
        wrapper = unwrap_lightning(optimizer)
        return ZeroStepCounter(wrapper, unwrap_optimizer(wrapper), count)


def unwrap_lightning(optimizer: Any) -> Any:
    """The optimizer a ``LightningOptimizer`` wraps (its public ``.optimizer``); anything else as it is."""
    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer


def choose_deepspeed_optimizer(spec: OptimizerSpec, *, offloaded: bool, on_cuda: bool) -> tuple[Any, str]:
    """The class to build for ``spec`` under DeepSpeed (None: the registered one), and why.

    Pure routing: adam/adamw → ``DeepSpeedCPUAdam`` when the optimizer state is offloaded,
    ``FusedAdam`` on CUDA; otherwise torch's. torch's defaults (AdamW's weight_decay=0.01)
    are kept, so switching strategy never changes the hyper-parameters.

    Example:
        >>> from flashdist.optim.specs import normalize_optimizer
        >>> choose_deepspeed_optimizer(normalize_optimizer("adamw"), offloaded=False, on_cuda=False)
        (None, "torch's AdamW: not offloaded and not on CUDA")
    """
    if spec.entry is not None and spec.name in _CUDA_ONLY and not on_cuda:
        raise ConfigError(
            f"optimizer {spec.name!r} is a CUDA kernel (DeepSpeed has no CPU build of it), and this fit runs on CPU.",
            accepted=("adam", "adamw", "FusedAdam", "DeepSpeedCPUAdam", "any torch optimizer"),
            hint="on CPU, name 'adamw': flashdist picks DeepSpeedCPUAdam when the optimizer is offloaded.",
        )
    if spec.entry is None or spec.entry.provider != "torch":
        return None, "as requested"
    name = spec.name.lower()
    if name not in _ADAM_FAMILY or not (offloaded or on_cuda):
        return None, f"torch's {spec.name}: not offloaded and not on CUDA" if name in _ADAM_FAMILY else "as requested"
    torch_class = spec.entry.target
    kernel = "DeepSpeedCPUAdam" if offloaded else "FusedAdam"
    unsupported = sorted(set(spec.kwargs) - _ADAM_KWARGS)
    if unsupported:
        return None, f"kept torch's {spec.name}: {kernel} does not take {unsupported}"
    decoupled = _ADAM_FAMILY[name]
    target = functools.partial(_deepspeed_adam, kernel=kernel, decoupled=decoupled, torch_defaults=_defaults(torch_class))
    reason = "optimizer state offloaded to CPU" if offloaded else "CUDA device"
    return target, f"{kernel} ({'AdamW' if decoupled else 'Adam'} mode): {reason}"


_ADAM_KWARGS = frozenset({"lr", "betas", "eps", "weight_decay", "amsgrad"})


def _deepspeed_adam(params: Any, *, kernel: str, decoupled: bool, torch_defaults: dict[str, Any], **kwargs: Any) -> Any:
    from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam

    kwargs = {**torch_defaults, **kwargs}
    if kernel == "DeepSpeedCPUAdam":
        return DeepSpeedCPUAdam(params, adamw_mode=decoupled, **kwargs)
    kwargs.pop("amsgrad", None) if not kwargs.get("amsgrad") else None
    return FusedAdam(params, adam_w_mode=decoupled, **kwargs)


def _defaults(torch_class: type) -> dict[str, Any]:
    params = inspect.signature(torch_class).parameters
    return {k: params[k].default for k in ("betas", "eps", "weight_decay", "amsgrad") if k in params}


def _loader_batch_size(trainer: Any) -> int | None:
    loader = trainer.train_dataloader
    return getattr(loader, "batch_size", None) if loader is not None else None


register_route(DeepSpeedStrategy, DeepSpeedRoute)
