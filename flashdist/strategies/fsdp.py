"""FSDP2 (``fully_shard``) under flashdist: sharding without user code, optimizer after sharding.

:class:`FSDP2Strategy` is Lightning's ``ModelParallelStrategy`` with the two things flashdist
needs changed:

- every rank is data-parallel (``data_parallel_size`` = world size, tensor-parallel size 1).
  ``ModelParallelStrategy()``'s defaults (data-parallel = nodes, tensor-parallel = devices)
  shard nothing on one node and let every rank iterate the whole dataset;
- it applies ``fully_shard`` itself: first to each module of the configured block classes
  (``shard_module_classes``: classes or class names, e.g. ``"TransformerEncoderLayer"``;
  by default every child of an ``nn.ModuleList``, where transformer blocks live), then to
  each top-level child of the LightningModule that holds parameters (the root).
  ``reshard_after_forward`` is FSDP2's own switch for those blocks: ``True`` (default, ZeRO-3:
  a block's parameters are all-gathered again for its backward) or ``False`` (ZeRO-2-like, as
  FSDP1's ``SHARD_GRAD_OP``: gathered once per step and held until the backward, one all-gather
  fewer per block per step for the memory of the unsharded blocks).

No-weight-decay names are computed before sharding and handed to the route, which builds the
optimizer over the sharded DTensors with the same names (FSDP2 keeps parameter names) and
picks torch's ``fused`` or ``foreach`` kernels when the user did not choose one.
Works on CPU (gloo, a ``"cpu"`` device mesh) and CUDA.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from flashdist.compat.lightning import configure_model_counts_as_overridden, set_parallel_sizes
from flashdist.compat.torch import fused_kernel_devices
from flashdist.errors import ConfigError
from flashdist.optim.param_groups import Grouping, no_decay_names
from flashdist.optim.specs import OptimizerSpec
from flashdist.strategies import register_route
from flashdist.strategies.base import StrategyRoute, group_parameters
from flashdist.strategies.grad_norm import ShardNorms, local_shard_norm_squared


class FSDP2Strategy(ModelParallelStrategy):
    """Fully sharded data parallel (FSDP2) over all ranks, applied by flashdist.

    Example:
        >>> strategy = FSDP2Strategy(shard_module_classes=("TransformerEncoderLayer",))
        >>> strategy.shard_module_classes
        ('TransformerEncoderLayer',)
    """

    strategy_name = "fsdp"

    def __init__(self, shard_module_classes: Sequence[type | str] | None = None, reshard_after_forward: bool = True, **kwargs: Any):
        for key in ("data_parallel_size", "tensor_parallel_size"):
            if key in kwargs:
                raise ConfigError(
                    f"FSDP2Strategy got {key}={kwargs[key]!r}; flashdist's fsdp shards over every rank.",
                    hint="use lightning's ModelParallelStrategy for 2-D (tensor) parallelism.",
                )
        if not isinstance(reshard_after_forward, bool):
            raise ConfigError(
                f"FSDP2Strategy got reshard_after_forward={reshard_after_forward!r}; accepted: True or False.",
                hint="False keeps each block's gathered parameters from its forward to its backward (fewer all-gathers, more memory).",
            )
        super().__init__(**kwargs)
        self.reshard_after_forward = reshard_after_forward
        self.shard_module_classes = tuple(shard_module_classes) if shard_module_classes is not None else None
        self.no_decay_param_names: set[str] | None = None
        self.param_names_before_sharding: tuple[str, ...] = ()

    def setup_environment(self) -> None:
        set_parallel_sizes(self, data_parallel=self.num_nodes * self.num_processes, tensor_parallel=1)
        super().setup_environment()

    def setup(self, trainer: Any) -> None:
        module = self.lightning_module
        self.no_decay_param_names = no_decay_names(module)
        self.param_names_before_sharding = tuple(name for name, p in module.named_parameters() if p.requires_grad)
        module.to(self.root_device)
        # fully_shard applies to a module once: a later stage of this Trainer (validate or test
        # after fit, a Lightning habit) finds the model sharded by the first.
        if not is_sharded(module):
            shard(module, self.device_mesh["data_parallel"], self.shard_module_classes, self.reshard_after_forward)
        # ModelParallelStrategy.setup insists on a user configure_model(); flashdist sharded
        # above, so it only has to believe one exists.
        with configure_model_counts_as_overridden(module):
            super().setup(trainer)


def is_sharded(module: nn.Module) -> bool:
    """``fully_shard`` was applied to ``module`` or one of its submodules.

    Example:
        >>> is_sharded(nn.Linear(2, 2))
        False
    """
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def shard(module: nn.Module, mesh: Any, block_classes: Sequence[type | str] | None, reshard_after_forward: bool = True) -> list[str]:
    """Apply ``fully_shard`` to each block, then to each top-level child with parameters.

    ``reshard_after_forward`` applies to the blocks; the top-level children keep FSDP2's default
    (FSDP2 never reshards the outermost unit after forward: its backward comes next).

    Returns the names of the sharded modules (blocks first), for logs and tests.
    """
    from torch.distributed.fsdp import fully_shard

    blocks = list(_blocks(module, block_classes))
    for _, block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    roots = [(name, child) for name, child in module.named_children() if any(True for _ in child.parameters())]
    for _, child in roots:
        fully_shard(child, mesh=mesh)
    names = [name for name, _ in blocks] + [name for name, _ in roots]
    rank_zero_info(f"flashdist fsdp: fully_shard on {names} over {mesh.size()} data-parallel ranks")
    return names


def _blocks(module: nn.Module, block_classes: Sequence[type | str] | None) -> Iterable[tuple[str, nn.Module]]:
    if block_classes is None:
        for name, child in module.named_modules():
            if isinstance(child, nn.ModuleList):
                yield from ((f"{name}.{i}", block) for i, block in child.named_children() if any(True for _ in block.parameters()))
        return
    wanted = tuple(block_classes)
    for name, child in module.named_modules():
        if name and any(_matches(child, kind) for kind in wanted):
            yield name, child


def _matches(module: nn.Module, kind: type | str) -> bool:
    if isinstance(kind, str):
        return type(module).__name__ == kind
    return isinstance(module, kind)


class FSDPRoute(StrategyRoute):
    """Optimizer over the sharded parameters, groups mapped by name, fused/foreach when supported."""

    name = "fsdp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shard_norms: ShardNorms | None = None  # made at the first update

    def param_groups(self, module: nn.Module, weight_decay: float | None, grouping: Grouping | None = None) -> list[Any]:
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        before = getattr(self.strategy, "param_names_before_sharding", ())
        if before and tuple(name for name, _ in named) != tuple(before):
            raise RuntimeError(
                "flashdist fsdp: parameter names changed under fully_shard "
                f"({sorted(set(before) ^ {name for name, _ in named})[:5]}); cannot map the param groups. This is a flashdist bug."
            )
        no_decay = getattr(self.strategy, "no_decay_param_names", None)
        return group_parameters(named, module, weight_decay, no_decay if no_decay is not None else no_decay_names(module), grouping)

    def optimizer_class(self, spec: OptimizerSpec, params: list[Any]) -> tuple[Any, str]:
        return choose_kernel(spec, _device_type(params))

    def record_grad_norm(self, module: nn.Module) -> None:
        # The local norm² now, the all-reduce once per batch of updates (ShardNorms): lr.csv and
        # the loggers get the same values, without a blocking collective at every update.
        grads = [p.grad for p in self.trainable_parameters(module) if p.grad is not None]
        local = local_shard_norm_squared(grads) if grads and hasattr(grads[0], "device_mesh") else None
        if local is None:
            super().record_grad_norm(module)
            return
        if self._shard_norms is None:
            self._shard_norms = ShardNorms()
        self._grad_norm = self._shard_norms.add(*local)

    def finish_grad_norms(self) -> None:
        super().finish_grad_norms()
        if self._shard_norms is not None:
            self._shard_norms.reduce()

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # A collective: every rank sends its shards; with cpu_offload only rank 0 keeps the result.
        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.strategy.global_rank == 0 else None


# Fused kernels DTensor has a sharding rule for (torch 2.13: aten._fused_adam(w)_ only); a
# fused SGD on FSDP2's DTensors stops with "Operator aten._fused_sgd_.tensor_lr does not have a
# sharding strategy registered". The others get foreach.
_DTENSOR_FUSED = frozenset({"Adam", "AdamW"})


def choose_kernel(spec: OptimizerSpec, device_type: str) -> tuple[Any, str]:
    """torch's fused kernel when the optimizer, the device and DTensor support it, else foreach; the user's choice wins.

    Example:
        >>> from flashdist.optim.specs import normalize_optimizer
        >>> choose_kernel(normalize_optimizer("adamw"), "cpu")[1]
        'fused=True: AdamW has a fused cpu kernel'
    """
    entry = spec.entry
    if entry is None or entry.provider != "torch":
        return None, "as requested"
    if "fused" in spec.kwargs or "foreach" in spec.kwargs:
        return None, "kernel chosen by the user"
    cls = entry.target
    if entry.supports_fused and device_type in fused_kernel_devices() and cls.__name__ in _DTENSOR_FUSED:
        return _with(cls, fused=True), f"fused=True: {cls.__name__} has a fused {device_type} kernel"
    if entry.supports_foreach:
        return _with(cls, foreach=True), f"foreach=True: no fused {cls.__name__} kernel for DTensors on {device_type}"
    return None, "as requested (no fused or foreach kernel)"


def _with(cls: type, **flags: Any) -> Any:
    def build(params: Any, **kwargs: Any) -> torch.optim.Optimizer:
        return cls(params, **kwargs, **flags)

    return build


def _device_type(params: list[Any]) -> str:
    for group in params:
        tensors = group["params"] if isinstance(group, dict) else [group]
        for tensor in tensors:
            return tensor.device.type
    return "cpu"


class FSDP1Route(StrategyRoute):
    """Lightning's ``FSDPStrategy`` (FSDP1, CUDA only): groups by name need ``use_orig_params=True``."""

    name = "fsdp1"

    def param_groups(self, module: nn.Module, weight_decay: float | None, grouping: Grouping | None = None) -> list[Any]:
        if weight_decay is not None and not self.strategy.kwargs.get("use_orig_params", True):
            raise ConfigError(
                f"Task(weight_decay={weight_decay}) groups parameters by name, but FSDPStrategy(use_orig_params=False) "
                "flattens them into one FlatParameter per unit.",
                hint="keep Lightning's default use_orig_params=True, or use strategy='fsdp' (FSDP2).",
            )
        return super().param_groups(module, weight_decay, grouping)


def _register() -> None:
    from lightning.pytorch.strategies import FSDPStrategy

    register_route(ModelParallelStrategy, FSDPRoute)
    register_route(FSDPStrategy, FSDP1Route)


_register()
