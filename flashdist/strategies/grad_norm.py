"""The pre-clip total gradient norm of an optimizer step, the same quantity on every strategy.

Under DDP every rank holds the all-reduced gradients, so the norm of its own ``.grad``s is the
global one. Under FSDP2 each rank holds a shard: ``torch.nn.utils.get_total_norm`` over the
DTensor gradients returns a DTensor whose ``full_tensor()`` all-reduces the shards' partial
norms, so the result is the norm over all shards, not the local shard's (torch 2.13; the
same path ``clip_grad_norm_`` takes, which is why Lightning's clipping under FSDP2 is right:
both are checked against a one-process reference in tests/strategies/test_parity.py).
DeepSpeed computes the norm inside its engine step; its route reads it there
(compat/deepspeed.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from flashdist.compat.torch import foreach_norms


def total_grad_norm(parameters: Iterable[torch.Tensor]) -> float | None:
    """The 2-norm of all gradients together (DTensor shards included); None when no parameter has one.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> total_grad_norm([w])
        5.0
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    if hasattr(grads[0], "full_tensor"):  # DTensor shards (FSDP2): reduce the shards' partial norms
        return _sharded_total_norm(grads)
    if len({(g.device, g.dtype) for g in grads}) > 1:
        return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))
    # One device and dtype (the usual case): the fused kernel without get_total_norm's grouping.
    return float(torch.linalg.vector_norm(torch.stack(foreach_norms(grads))))


def _sharded_total_norm(grads: list[torch.Tensor]) -> float:
    """The total norm of FSDP2's DTensor gradients with one all-reduce of a scalar.

    On a 1-D mesh with every gradient ``Shard``-ed, the ranks' local shards are disjoint, so
    the total norm² is the sum over ranks of each rank's local norm². Computed on the local
    tensors (``to_local()``) it skips DTensor's per-op dispatch, which cost about a seventh of
    a 1 ms FSDP2 step (profiled); anything else takes DTensor's own reduction.
    """
    from torch.distributed.tensor import Shard

    mesh = grads[0].device_mesh  # type: ignore[attr-defined]
    shards_only = mesh.ndim == 1 and all(
        g.device_mesh == mesh and all(isinstance(p, Shard) for p in g.placements) for g in grads  # type: ignore[attr-defined]
    )
    if not shards_only:
        return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0).full_tensor())  # type: ignore[attr-defined]
    local = [g.to_local() for g in grads]  # type: ignore[attr-defined]
    squared = torch.nn.utils.get_total_norm(local, norm_type=2.0).to(torch.float64) ** 2
    torch.distributed.all_reduce(squared, group=mesh.get_group())
    return float(squared.sqrt())
