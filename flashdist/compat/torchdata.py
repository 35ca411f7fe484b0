"""torchdata behaviour flashdist relies on (torchdata 0.11), tested by name in tests/compat/test_torchdata.py.

torchdata is optional: nothing here imports it unless the loader came from it.
"""

from __future__ import annotations

from typing import Any

_STATEFUL_SAMPLER_MODULE = "torchdata.stateful_dataloader.sampler"


def shuffle_sampler_as_torch(loader: Any) -> Any:
    """The training loader's sampler, with a ``StatefulDataLoader(shuffle=True)``'s own sampler read as torch's ``RandomSampler``.

    Relies on ``StatefulDataLoader.__init__`` giving ``shuffle=True`` its own
    ``torchdata.stateful_dataloader.sampler.RandomSampler(dataset, generator=generator)`` (a
    ``Sampler``, not a subclass of torch's), which, given no generator, seeds one of its own from
    the global RNG. Read as a custom sampler, its order would be drawn once per epoch from that
    generator: each rank's own (different ranks, different orders when unseeded), and a restarted
    process draws its first epoch's order again for the resumed epoch. It stands for what torch's
    ``RandomSampler`` stands for, so flashdist splits it the same way (the run's seed, or the
    loader's own ``generator``'s). Any other sampler is returned as it is. Tested by
    ``test_a_shuffling_stateful_dataloader_has_torchdatas_own_random_sampler``.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> type(shuffle_sampler_as_torch(DataLoader(range(4), shuffle=True))).__name__
        'RandomSampler'
    """
    sampler = getattr(loader, "sampler", None)
    if type(sampler).__module__ != _STATEFUL_SAMPLER_MODULE or type(sampler).__name__ != "RandomSampler":
        return sampler
    from torch.utils.data import RandomSampler

    own_generator = sampler.generator is not None and sampler.generator is getattr(loader, "generator", None)
    return RandomSampler(sampler.data_source, replacement=sampler.replacement, num_samples=sampler.num_samples,
                         generator=sampler.generator if own_generator else None)
