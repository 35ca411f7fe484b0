"""A distributed sampler that can resume mid-epoch, even on a different number of ranks.

Lightning injects a plain ``DistributedSampler``: after a mid-epoch resume it starts the
epoch over, so the samples trained before the crash are seen twice (only a warning says so).
:class:`ResumableDistributedSampler` draws the same permutation (same seed, same epoch), and
skips the part of the epoch already consumed.

Why a global prefix is enough: ``DistributedSampler`` deals the epoch's permutation out
round-robin (rank ``r`` takes positions ``r, r + W, r + 2W, ...``), so after every rank has
consumed ``b`` batches of ``B`` samples, exactly the first ``b * B * W`` positions of the
permutation are done. The rest is dealt out again over however many ranks there are now.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from torch.utils.data import BatchSampler, DistributedSampler, SequentialSampler

from flashdist.compat.torch import distributed_sampler_global_order


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` plus :meth:`resume_at`: skip the samples an epoch already consumed.

    Example:
        >>> sampler = ResumableDistributedSampler(range(10), num_replicas=2, rank=0, shuffle=False)
        >>> sampler.resume_at(epoch=0, samples_done=4)
        >>> list(sampler)
        [4, 6, 8]
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._resume_epoch: int | None = None
        self._samples_done = 0

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """In ``epoch`` (only), skip the first ``samples_done`` positions of the global order."""
        self._resume_epoch, self._samples_done = epoch, samples_done

    def global_order(self) -> list[int]:
        """The epoch's global order, exactly as ``DistributedSampler`` builds it (before dealing)."""
        return distributed_sampler_global_order(self)

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if self._resume_epoch == self.epoch and self._samples_done:
            order = _repad(order[: len(self.dataset)], self._samples_done, self.num_replicas, self.drop_last)
        return iter(order[self.rank :: self.num_replicas])


def _repad(order: list[int], skip: int, num_replicas: int, drop_last: bool) -> list[int]:
    """The unseen rest of an epoch, evened out over ``num_replicas`` ranks as the sampler would."""
    rest = order[skip:]
    if not rest:
        return rest
    if drop_last:
        return rest[: len(rest) - len(rest) % num_replicas]
    padding = -len(rest) % num_replicas
    return rest + (rest * math.ceil(padding / len(rest)))[:padding]


def install_resumable_sampler(loader: Any) -> ResumableDistributedSampler | None:
    """Swap the sampler inside a training loader for a resumable one with the same settings.

    Handles the ``DistributedSampler`` Lightning injects and a plain sequential order (one
    rank). Returns None (and changes nothing) for any other sampler: a custom sampler keeps
    its own semantics, and flashdist does not claim to resume it mid-epoch.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    if type(batch_sampler) is not BatchSampler:
        return None
    sampler = batch_sampler.sampler
    if isinstance(sampler, ResumableDistributedSampler):
        return sampler
    if type(sampler) is DistributedSampler:
        resumable = ResumableDistributedSampler(
            sampler.dataset, num_replicas=sampler.num_replicas, rank=sampler.rank,
            shuffle=sampler.shuffle, seed=sampler.seed, drop_last=sampler.drop_last,
        )
        resumable.set_epoch(sampler.epoch)
    elif type(sampler) is SequentialSampler:
        resumable = ResumableDistributedSampler(sampler.data_source, num_replicas=1, rank=0, shuffle=False)
    else:
        return None
    batch_sampler.sampler = resumable  # the loader's iterator reads it at the start of each epoch
    return resumable
