"""DeepSpeed internals flashdist relies on (deepspeed 0.19.x; tests/compat/test_deepspeed.py)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
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


def zero_step_grad_norm(zero_optimizer: Any) -> float | None:
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
    norm = getattr(zero_optimizer, "_global_grad_norm", None)
    return None if norm is None else float(norm)
