"""torch internals and copied rules flashdist relies on (torch 2.13), one small function each, tested by name in tests/compat/test_torch.py."""

from __future__ import annotations

import math
from typing import Any


def fused_kernel_devices() -> list[str]:
    """Device types with torch's ``fused=True`` optimizer kernels.

    Relies on ``torch.optim.optimizer._get_fused_kernels_supported_devices``: torch's own list,
    which its optimizers check ``fused=True`` against; no public function exposes it.
    """
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return list(_get_fused_kernels_supported_devices())


def distributed_sampler_global_order(sampler: Any) -> list[int]:
    """A ``DistributedSampler``'s epoch order over all ranks, before it deals position ``r, r+W, ...`` to rank ``r``.

    The permutation comes from torch itself (a one-replica ``DistributedSampler`` with the
    same seed and epoch); the padding and cut to ``total_size`` are DistributedSampler's rule,
    copied: torch deals the order out per rank and has no public view of the whole of it.

    Example:
        >>> from torch.utils.data import DistributedSampler
        >>> distributed_sampler_global_order(DistributedSampler(range(5), num_replicas=2, rank=0, shuffle=False))
        [0, 1, 2, 3, 4, 0]
    """
    from torch.utils.data import DistributedSampler

    one = DistributedSampler(sampler.dataset, num_replicas=1, rank=0, shuffle=sampler.shuffle, seed=sampler.seed)
    one.set_epoch(sampler.epoch)
    indices = list(iter(one))
    if sampler.drop_last:
        return indices[: sampler.total_size]
    padding = sampler.total_size - len(indices)
    if padding > 0:
        indices += (indices * math.ceil(padding / len(indices)))[:padding]
    return indices


def lambda_lr_state(last_epoch: int, base_lrs: list[float], last_lrs: list[float]) -> dict[str, Any]:
    """A state dict a ``LambdaLR`` loads (and that loads back here): the counter, base LRs, neutral rest.

    Relies on ``LRScheduler.state_dict`` saving the instance ``__dict__``, private fields
    included (``_step_count``, ``_last_lr``; ``lr_lambdas`` as None for plain functions): the
    fast path writes them so a checkpoint of one implementation loads into the other; torch
    documents no state-dict schema.

    Example:
        >>> sorted(lambda_lr_state(3, [0.1], [0.05]))
        ['_last_lr', '_step_count', 'base_lrs', 'last_epoch', 'lr_lambdas']
    """
    return {
        "last_epoch": last_epoch,
        "base_lrs": [float(b) for b in base_lrs],
        "_step_count": last_epoch + 1,
        "lr_lambdas": [None] * len(base_lrs),
        "_last_lr": list(last_lrs),
    }

def dynamo_frame_compiles() -> int:
    """How many frames dynamo has compiled in this process so far (a recompile adds one).

    Relies on ``torch._dynamo.utils.counters["frames"]["total"]``, incremented once per frame
    compilation (first compiles and recompiles alike). No public API counts compilations:
    ``torch.compiler`` exposes none, and the recompile log (``TORCH_LOGS=recompiles``) is text.
    Tested by ``test_dynamo_counts_one_frame_compile_per_recompile``.

    Example:
        >>> before = dynamo_frame_compiles()
        >>> dynamo_frame_compiles() - before
        0
    """
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def dynamo_recompile_limit() -> int:
    """How many compiled versions of one frame dynamo keeps before it runs that frame eagerly.

    Relies on ``torch._dynamo.config.recompile_limit`` (named ``cache_size_limit`` before
    torch 2.7): reported next to a recompile count, so a reader knows when the compiled step
    stopped being compiled at all. Tested by ``test_dynamo_recompile_limit_is_a_positive_int``.

    Example:
        >>> dynamo_recompile_limit() > 0
        True
    """
    import torch._dynamo.config as config

    return int(getattr(config, "recompile_limit", None) or config.cache_size_limit)


def foreach_norms(tensors: list[Any]) -> list[Any]:
    """The 2-norm of each tensor, in one fused kernel call per device and dtype.

    Relies on ``torch._foreach_norm``, which ``torch.nn.utils.get_total_norm`` itself calls
    after grouping its inputs (that grouping and its checks cost about 2.5× the kernel call on
    a 6-tensor MLP, measured in tests/compat; flashdist calls this at every optimizer step).
    No public API takes a list of tensors. Tested by
    ``test_foreach_norm_returns_each_tensors_2_norm``.

    Example:
        >>> import torch
        >>> [float(n) for n in foreach_norms([torch.tensor([3.0, 4.0]), torch.ones(4)])]
        [5.0, 2.0]
    """
    import torch

    return list(torch._foreach_norm(tensors))
