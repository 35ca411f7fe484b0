"""The pre-clip total gradient norm of an optimizer step, the same quantity on every strategy.

Under DDP every rank holds the all-reduced gradients, so the norm of its own ``.grad``s is the
global one. Under FSDP2 each rank holds a shard: ``torch.nn.utils.get_total_norm`` over the
DTensor gradients returns a DTensor whose ``full_tensor()`` all-reduces the shards' partial
norms, so the result is the norm over all shards, not the local shard's (torch 2.13; the
same path ``clip_grad_norm_`` takes, which is why Lightning's clipping under FSDP2 is right:
both are checked against a one-process reference in tests/strategies/test_parity.py).
DeepSpeed computes the norm inside its engine step; its route reads it there
(compat/deepspeed.py).

No route reads a norm on the host at the update that computed it: reading a tensor's value
(``float(t)``) is a host sync, which on a GPU stalls the host until the device has caught up.
Each update's norm stays a tensor in a :class:`NormBatch`, and the batch is read at once (one
sync): every :data:`RESOLVE_EVERY_UPDATES` updates, at a step whose norm is logged, and before
``lr.csv`` is flushed for a checkpoint or at the end. Until then the update's norm is a
:class:`PendingNorm`. Under FSDP2 the norm also needs a collective: the route records each
update's local norm² and :class:`ShardNorms` sums a batch of them in one all-reduce
(every :data:`REDUCE_EVERY_UPDATES` updates at most).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from flashdist.compat.torch import foreach_norms


def total_grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """The 2-norm of all gradients together (DTensor shards included), a 0-dim tensor on their device; None when no parameter has one.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> total_grad_norm([w])
        tensor(5.)
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    if hasattr(grads[0], "full_tensor"):
        # DTensor gradients in a layout the FSDP2 route does not batch (it sums 1-D shards itself,
        # ShardNorms below): DTensor's own reduction of the shards' partial norms.
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0).full_tensor()  # type: ignore[attr-defined]
    if len({(g.device, g.dtype) for g in grads}) > 1:
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    # One device and dtype (the usual case): the fused kernel without get_total_norm's grouping.
    return torch.linalg.vector_norm(torch.stack(foreach_norms(grads)))


def local_shard_norm_squared(grads: list[torch.Tensor]) -> tuple[torch.Tensor, Any] | None:
    """This rank's part of the total norm² of FSDP2's DTensor gradients, and the group to sum it over.

    On a 1-D mesh with every gradient ``Shard``-ed, the ranks' local shards are disjoint, so
    the total norm² is the sum over ranks of each rank's local norm². Computed on the local
    tensors (``to_local()``) it skips DTensor's per-op dispatch, which cost about a seventh of
    a 1 ms FSDP2 step (profiled). None for any other layout: DTensor's own reduction then.
    """
    from torch.distributed.tensor import Shard

    mesh = grads[0].device_mesh  # type: ignore[attr-defined]
    shards_only = mesh.ndim == 1 and all(
        g.device_mesh == mesh and all(isinstance(p, Shard) for p in g.placements) for g in grads  # type: ignore[attr-defined]
    )
    if not shards_only:
        return None
    local = [g.to_local() for g in grads]  # type: ignore[attr-defined]
    squared = torch.nn.utils.get_total_norm(local, norm_type=2.0).to(torch.float64) ** 2
    return squared, mesh.get_group()


# Updates whose local norm² wait for one all-reduce at most: a 2-rank gloo all-reduce of a
# scalar per update cost about 40% of the grad-norm monitor's time in an FSDP2 MLP step
# (profiled; results/profile-fsdp-mlp.txt). Lightning's default log_every_n_steps (50) reduces
# sooner. 64 divides lr.csv's flush batch (4096 rows).
REDUCE_EVERY_UPDATES = 64
# Updates whose norms wait for one host read at most when nothing logs them sooner: a 0-dim tensor
# each, and lr.csv's flush batch (4096 rows), so the rows it writes between checkpoints are known.
RESOLVE_EVERY_UPDATES = 4096


class PendingNorm:
    """One update's total gradient norm, known once its batch is reduced (``value`` None until then).

    Example:
        >>> norm = PendingNorm(); norm.value is None
        True
        >>> norm.value = 5.0; float(norm)
        5.0
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float | None = None

    def __float__(self) -> float:
        return float("nan") if self.value is None else self.value

    def __repr__(self) -> str:
        return f"PendingNorm({self.value!r})"


class NormBatch:
    """Norms of updates as tensors, read on the host together: one sync per batch, not one per update.

    Example:
        >>> norms = NormBatch(every_updates=2)
        >>> first = norms.add(torch.tensor(3.0))
        >>> first.value is None  # waiting for its batch
        True
        >>> second = norms.add(torch.tensor(4.0))
        >>> first.value, second.value  # the batch of two, read at once
        (3.0, 4.0)
    """

    def __init__(self, every_updates: int = RESOLVE_EVERY_UPDATES) -> None:
        self.every_updates = every_updates
        self._pending: list[tuple[PendingNorm, torch.Tensor]] = []

    def add(self, value: torch.Tensor) -> PendingNorm:
        """Record one update's norm (a tensor, not read now); read the batch when it is full."""
        norm = PendingNorm()
        self._pending.append((norm, value.detach()))
        if len(self._pending) >= self.every_updates:
            self.reduce()
        return norm

    def reduce(self) -> None:
        """Fill in every pending norm (one host read; a collective too in :class:`ShardNorms`)."""
        if not self._pending:
            return
        stacked = torch.stack([value.to(torch.float64) for _, value in self._pending])
        for (norm, _), value in zip(self._pending, self._values(stacked).tolist()):
            norm.value = value
        self._pending.clear()

    def _values(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked


class ShardNorms(NormBatch):
    """Local norm² of each update's FSDP2 shards, summed over the ranks in one all-reduce per batch.

    Every rank records every update and reduces at the same updates (each call site is reached
    by all ranks together), so the collectives match.

    Example (no process group: this rank's norm² is the whole sum):
        >>> norms = ShardNorms(every_updates=2)
        >>> first = norms.add(torch.tensor(9.0, dtype=torch.float64), group=None)
        >>> first.value is None  # waiting for its batch
        True
        >>> second = norms.add(torch.tensor(16.0, dtype=torch.float64), group=None)
        >>> first.value, second.value  # the batch of two, reduced at once
        (3.0, 4.0)
    """

    def __init__(self, every_updates: int = REDUCE_EVERY_UPDATES) -> None:
        super().__init__(every_updates)
        self._group: Any = None

    def add(self, squared: torch.Tensor, group: Any = None) -> PendingNorm:  # type: ignore[override]
        """Record one update's local norm²; reduce the batch when it is full."""
        self._group = group
        return super().add(squared)

    def _values(self, stacked: torch.Tensor) -> torch.Tensor:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stacked, group=self._group)
        return stacked.sqrt()
