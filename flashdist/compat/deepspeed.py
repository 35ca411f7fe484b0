"""DeepSpeed internals flashdist relies on (deepspeed 0.19.x; tests/compat/test_deepspeed.py)."""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
from collections.abc import Callable, Iterator
from typing import Any

# DeepSpeedEngine._get_rank_zero_ckpt_name: "<bf16_>zero_pp_rank_<dp rank>_mp_rank_<mp rank:02d>_optim_states.pt".
_ZERO_SHARD = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


def zero_shard_rank(file_name: str) -> int | None:
    """The data-parallel rank that wrote a ZeRO optimizer-state shard of that name, or None.

    Relies on the file-name pattern of ``DeepSpeedEngine._get_rank_zero_ckpt_name``: a
    checkpoint directory records its data-parallel size nowhere else that can be read
    without loading the shards.

    Example:
        >>> zero_shard_rank("zero_pp_rank_1_mp_rank_00_optim_states.pt"), zero_shard_rank("mp_rank_00_model_states.pt")
        (1, None)
    """
    match = _ZERO_SHARD.match(file_name)
    return int(match[1]) if match else None


class ZeroStepCounter:
    """Calls ``count(torch_optimizer, args, kwargs)`` after each ZeRO wrapper ``step()`` that applied an update.

    Relies on the ZeRO wrappers (``DeepSpeedZeroOptimizer``, ``..._Stage3``) taking one
    ``step()`` per real update and setting ``.overflow`` when fp16 skipped it: the torch
    optimizer underneath is stepped once per param group (sub-group in stage 3), so its own
    step hooks (``register_step_pre_hook``) cannot count updates. ``remove()`` undoes it.
    """

    def __init__(self, wrapper: Any, inner: Any, count: Callable[[Any, Any, Any], None]):
        self.wrapper = wrapper
        original = wrapper.step

        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if not getattr(wrapper, "overflow", False):
                count(inner, args, kwargs)
            return result

        wrapper.step = step

    def remove(self) -> None:
        self.wrapper.__dict__.pop("step", None)


def zero_step_grad_norm(zero_optimizer: Any) -> float | torch.Tensor | None:
    """The pre-clip global gradient 2-norm the ZeRO optimizer computed in the ``step()`` now running or just run.

    Relies on ``_global_grad_norm``, which ``DeepSpeedZeroOptimizer.step`` (stages 1-2),
    ``DeepSpeedZeroOptimizer_Stage3.step`` and ``BF16_Optimizer.step`` set from the norm
    they clip with, before clipping. The public ``engine.get_global_grad_norm()`` copies it
    only after the wrapper's ``step()`` returns, which is after flashdist's step counter
    (which wraps that ``step()``) reads it. Tested by
    ``test_zero_optimizers_set_global_grad_norm_before_clipping``.

    Example:
        >>> class Zero: _global_grad_norm = 2.5
        >>> zero_step_grad_norm(Zero())
        2.5
    """
    # As DeepSpeed left it, a tensor or a float: reading a tensor's value here would be a host sync per step.
    return getattr(zero_optimizer, "_global_grad_norm", None)


# The classes DeepSpeed pickles into its ZeRO optimizer shards (measured with
# torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO-1/2/3 CPU checkpoints). They are
# plain data: an Enum, a loss-scaler whose state is its attributes, a dataclass of offsets.
SAFE_GLOBALS = (
    "deepspeed.runtime.zero.config:ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler:LossScaler",
    "deepspeed.runtime.fp16.loss_scaler:DynamicLossScaler",
    "deepspeed.utils.tensor_fragment:fragment_address",
)


_weights_only_depth = 0


def safe_globals() -> list[Any]:
    """The classes of :data:`SAFE_GLOBALS`, imported (for ``torch.serialization.safe_globals``)."""
    import importlib

    out = []
    for target in SAFE_GLOBALS:
        module, name = target.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


class RefusedShard(pickle.UnpicklingError):
    """torch's weights-only load refused the shard file at ``path`` (the message is torch's)."""

    def __init__(self, path: str, error: pickle.UnpicklingError):
        super().__init__(str(error))
        self.path = path


def load_shards_weights_only(engine: Any) -> None:
    """Make a DeepSpeed engine load its checkpoint shards with ``torch.load(weights_only=True)``.

    Relies on: ``DeepSpeedEngine.checkpoint_engine`` (set in ``_configure_checkpointing``) being
    the object whose ``load(path, map_location)`` reads every model-states and optimizer shard,
    and on ``TorchCheckpointEngine.load`` calling ``torch.load(..., weights_only=False)``
    (deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py): a pickle in a shard runs.
    No public option turns that off. Other checkpoint engines (Nebula, decoupled) are left alone.
    """
    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    checkpoint_engine = getattr(engine, "checkpoint_engine", None)
    if type(checkpoint_engine) is not TorchCheckpointEngine:
        return
    def load(path: str, map_location: Any = None) -> Any:
        with weights_only_loads():
            try:
                return torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as error:
                raise RefusedShard(path, error) from error

    checkpoint_engine.load = load


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside runs with ``weights_only=True``, whatever its caller passes.

    DeepSpeed's converter (``ds_to_universal``) and universal loader (``universal_checkpoint.py``)
    call ``torch.load(..., weights_only=False)`` directly, not through the checkpoint engine.
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is torch's documented override (read at each call); the
    DeepSpeed classes of :data:`SAFE_GLOBALS` are allowed meanwhile.
    """
    import torch

    global _weights_only_depth
    if _weights_only_depth:  # nested: torch's safe_globals() exit would drop the outer one's classes
        yield
        return
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    _weights_only_depth += 1
    try:
        with torch.serialization.safe_globals(safe_globals()):
            yield
    finally:
        _weights_only_depth -= 1
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


_SHM_OP_BUILT = re.compile(r"DeepSpeed \S+ built successfully")


@contextlib.contextmanager
def shm_op_announcement_dropped() -> Iterator[None]:
    """Drop DeepSpeed's ``DeepSpeed <op> built successfully`` line while its process group forms; nothing else.

    Relies on ``deepspeed.comm.torch.build_shm_op`` (called by ``TorchBackend.__init__`` in every
    ``deepspeed.init_distributed``) announcing the CPU shared-memory op with a ``print`` to stdout
    after loading it (built once into torch's extension cache, only re-loaded later): not a log
    record or warning a filter could name. Any other line it prints is passed on.
    """
    import importlib
    import io
    import sys

    # by its module path: `deepspeed.comm.torch` as an attribute is the torch module it imported
    ds_torch = importlib.import_module("deepspeed.comm.torch")

    original = ds_torch.build_shm_op

    def quiet_build() -> Any:
        with contextlib.redirect_stdout(io.StringIO()) as said:
            built = original()
        for line in said.getvalue().splitlines():
            if not _SHM_OP_BUILT.fullmatch(line.strip()):
                print(line, file=sys.stdout)
        return built

    ds_torch.build_shm_op = quiet_build
    try:
        yield
    finally:
        ds_torch.build_shm_op = original


def forget_destroyed_world_group() -> None:
    """Drop DeepSpeed's cached clone of the world group when the process group it cloned is gone.

    ``deepspeed.utils.groups._clone_world_group`` caches ``_WORLD_GROUP`` for the process's life.
    A second DeepSpeed fit in the same process after ``torch.distributed.destroy_process_group()``
    (a notebook, a test session) gets the dead clone, and ``deepspeed.initialize`` dies with
    "Group … is not registered". With the cache cleared, DeepSpeed clones the live world again.
    Assumption (tests/compat/test_deepspeed.py): the cache is the module global ``_WORLD_GROUP``.
    """
    import torch.distributed as dist
    from deepspeed.utils import groups

    cached = getattr(groups, "_WORLD_GROUP", None)
    if cached is None:
        return
    if dist.is_initialized():
        try:
            dist.get_global_rank(cached, 0)  # what DeepSpeed calls on it; raises for a destroyed group
            return
        except ValueError:
            pass
    groups._WORLD_GROUP = None
