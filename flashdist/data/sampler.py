"""The order a fit reads its training samples in: the user's choice, on any number of ranks, resumable mid-epoch.

Which sample each rank reads at each micro-batch is a pure function of (dataset length,
ranks, seed, epoch, the user's sampler choice), and it lives here, in one class:

- ``SequentialSampler`` (``shuffle=False``): "as given", rank ``r`` reads ``r, r + W, r + 2W, ...``
  (``DistributedSampler(shuffle=False)``'s order);
- ``RandomSampler`` (``shuffle=True``): "shuffled", a permutation drawn from (seed, epoch) as
  ``DistributedSampler`` draws it, the seed being the run's (``PL_GLOBAL_SEED``, 0 when unseeded),
  recorded in every checkpoint; not the global RNG, which a restarted process does not hold;
- any other sampler: its own order (iterated once per epoch, after ``set_epoch`` when it has
  one), dealt round-robin across the ranks without reshuffling.

Lightning's own injection forces ``shuffle=True`` on every training loader (Lightning #10170) and
reshuffles a custom sampler's output (``DistributedSamplerWrapper``); flashdist builds this
sampler in its place (compat/lightning.py ``route_train_sampler``).

Why a global prefix is enough to resume: the order is dealt round-robin (rank ``r`` takes
positions ``r, r + W, r + 2W, ...``), so after every rank has consumed ``b`` batches of ``B``
samples, exactly the first ``b * B * W`` positions of the global order are done. The rest is
dealt out again over however many ranks there are now.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from flashdist.compat.torch import distributed_sampler_global_order
from flashdist.compat.torchdata import shuffle_sampler_as_torch
from flashdist.errors import ConfigError


class _SamplerPositions(Sequence):
    """Positions ``0 .. len(sampler) - 1`` of a custom sampler's epoch order: stands in for the dataset,
    so that ``DistributedSampler``'s lengths and padding follow the sampler, as Lightning's wrapper does."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        return index


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` plus :meth:`resume_at` (skip what an epoch consumed) and a custom ``source`` order.

    Example:
        >>> sampler = ResumableDistributedSampler(range(10), num_replicas=2, rank=0, shuffle=False)
        >>> sampler.resume_at(epoch=0, samples_done=4)
        >>> list(sampler)
        [4, 6, 8]
    """

    def __init__(
        self, dataset: Any, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
        seed: int = 0, drop_last: bool = False, source: Sampler | None = None,
    ):
        if source is not None:  # positions in the sampler's order stand in for the dataset (_SamplerPositions)
            dataset, shuffle = _SamplerPositions(source), False
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.source = source
        self._resume_epoch: int | None = None
        self._samples_done = 0

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """In ``epoch`` (only), skip the first ``samples_done`` positions of the global order."""
        self._resume_epoch, self._samples_done = epoch, samples_done

    def global_order(self) -> list[int]:
        """The epoch's global order (sample indices, padded as ``DistributedSampler`` pads), before dealing."""
        positions = distributed_sampler_global_order(self)
        if self.source is None:
            return positions
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(self.epoch)
        order = list(iter(self.source))
        return [order[p] for p in positions]

    def describe(self) -> str:
        """The plan's ``data order`` row: ``as given``, ``shuffled (seed S)`` or ``sampler X, split across ranks``."""
        if self.source is not None:
            return f"sampler {type(self.source).__name__}, split across ranks"
        return f"shuffled (seed {self.seed})" if self.shuffle else "as given"

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


def run_seed() -> int:
    """The run's seed, as Lightning's injected sampler reads it: ``seed_everything``'s ``PL_GLOBAL_SEED``, else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def sampler_for_user_choice(
    sampler: Sampler, dataset: Any, num_replicas: int, rank: int, seed: int | None = None, drop_last: bool = False,
) -> ResumableDistributedSampler:
    """The resumable sampler that keeps what ``sampler`` (the loader's own) asked for, on ``num_replicas`` ranks.

    Example:
        >>> from torch.utils.data import SequentialSampler
        >>> list(sampler_for_user_choice(SequentialSampler(range(6)), range(6), num_replicas=2, rank=1))
        [1, 3, 5]
    """
    seed = run_seed() if seed is None else seed
    common = dict(num_replicas=num_replicas, rank=rank, seed=seed, drop_last=drop_last)
    if type(sampler) is SequentialSampler:
        return ResumableDistributedSampler(dataset, shuffle=False, **common)
    if type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == len(sampler.data_source):
        if sampler.generator is not None:
            common["seed"] = sampler.generator.initial_seed()
        return ResumableDistributedSampler(dataset, shuffle=True, **common)
    if type(sampler) is DistributedSampler:  # the user's own: kept as configured, made resumable
        resumable = ResumableDistributedSampler(
            sampler.dataset, num_replicas=sampler.num_replicas, rank=sampler.rank,
            shuffle=sampler.shuffle, seed=sampler.seed, drop_last=sampler.drop_last,
        )
        resumable.set_epoch(sampler.epoch)
        return resumable
    try:
        len(sampler)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(
            f"the training DataLoader's sampler {type(sampler).__name__} has no length, so flashdist cannot split "
            "its order across ranks deterministically.",
            hint="give the sampler a __len__, or shard the data yourself and pass Trainer(use_distributed_sampler=False).",
        ) from None
    return ResumableDistributedSampler(None, source=sampler, **common)


def install_resumable_sampler(loader: Any) -> ResumableDistributedSampler | None:
    """Make the sampler inside a training loader a resumable one that keeps the user's order.

    Under several ranks flashdist already built it (compat/lightning.py routes Lightning's
    injection here); on one process the loader's own ``SequentialSampler``, ``RandomSampler``
    (then seeded with the run's seed, no longer the global RNG), ``DistributedSampler`` or
    custom sampler is swapped for the equivalent one-rank resumable sampler. Returns None (and
    changes nothing) for a loader without a plain ``BatchSampler`` (a custom batch sampler, an
    iterable dataset): flashdist does not claim to resume those mid-epoch.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    if type(batch_sampler) is not BatchSampler:
        return None
    sampler = batch_sampler.sampler
    if isinstance(sampler, ResumableDistributedSampler):
        return sampler
    try:
        resumable = sampler_for_user_choice(sampler, loader.dataset, num_replicas=1, rank=0)
    except ConfigError:
        return None  # one process reads an unsized sampler as it is; there is nothing to split
    batch_sampler.sampler = resumable  # the loader's iterator reads it at the start of each epoch
    return resumable


def describe_order(loader: Any) -> str:
    """The plan's ``data order`` row for a training loader, before or after :func:`install_resumable_sampler`.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> describe_order(DataLoader(range(4), shuffle=False))
        'as given'
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(batch_sampler, "sampler", None)
    if isinstance(sampler, ResumableDistributedSampler):
        return sampler.describe()
    if has_own_state(loader):
        return f"as {type(loader).__name__} yields, resumed from its own state"
    if type(batch_sampler) is not BatchSampler or sampler is None:
        # `is None`, not truthiness: bool() of a batch sampler asks its length, which an iterable's has not.
        what = batch_sampler if batch_sampler is not None else getattr(loader, "dataset", loader)
        return f"as the loader yields ({type(what).__name__}), not resumable mid-epoch"
    try:
        return sampler_for_user_choice(sampler, loader.dataset, num_replicas=1, rank=0).describe()
    except ConfigError:
        return f"sampler {type(sampler).__name__} (no length), not resumable mid-epoch"


def has_own_state(loader: Any) -> bool:
    """Whether Lightning checkpoints the loader's own position (``state_dict``/``load_state_dict``, as torchdata's
    ``StatefulDataLoader`` has): Lightning's ``_Stateful`` test, which decides what it saves under ``combined_loader``.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> has_own_state(DataLoader(range(4)))
        False
    """
    return callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))


def sampler_for_loader(loader: Any, num_replicas: int, rank: int, **_: Any) -> ResumableDistributedSampler | None:
    """The sampler flashdist gives a training loader on ``num_replicas`` ranks, in place of Lightning's injected one.

    None on one process for a sampler it cannot split (no length): that loader is read as it is.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> list(sampler_for_loader(DataLoader(range(6), shuffle=False), num_replicas=2, rank=0))
        [0, 2, 4]
    """
    if isinstance(loader.sampler, ResumableDistributedSampler):
        return None
    try:
        return sampler_for_user_choice(shuffle_sampler_as_torch(loader), loader.dataset, num_replicas=num_replicas, rank=rank)
    except ConfigError:
        if num_replicas > 1:
            raise
        return None
