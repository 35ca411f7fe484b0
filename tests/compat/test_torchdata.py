"""Each torchdata behaviour flashdist relies on (flashdist/compat/torchdata.py), tested by name."""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from flashdist.compat.torchdata import shuffle_sampler_as_torch


def test_a_shuffling_stateful_dataloader_has_torchdatas_own_random_sampler():
    own = StatefulDataLoader(range(10), batch_size=2, shuffle=True)
    sampler = own.sampler
    assert (type(sampler).__module__, type(sampler).__name__) == ("torchdata.stateful_dataloader.sampler", "RandomSampler")
    assert not isinstance(sampler, RandomSampler)  # read as a custom sampler, it would not be split as shuffle=True
    assert sampler.generator is not None and own.generator is None  # seeded by itself, from the global RNG
    given = torch.Generator().manual_seed(5)
    assert StatefulDataLoader(range(10), batch_size=2, shuffle=True, generator=given).sampler.generator is given


def test_shuffle_sampler_as_torch_is_torchs_random_sampler_with_the_users_generator_only():
    as_torch = shuffle_sampler_as_torch(StatefulDataLoader(range(10), batch_size=2, shuffle=True))
    assert type(as_torch) is RandomSampler and as_torch.generator is None and len(as_torch) == 10  # the run's seed
    given = torch.Generator().manual_seed(5)
    assert shuffle_sampler_as_torch(StatefulDataLoader(range(10), batch_size=2, shuffle=True, generator=given)).generator is given
    in_order = StatefulDataLoader(range(10), batch_size=2, shuffle=False)
    assert shuffle_sampler_as_torch(in_order) is in_order.sampler  # anything else: as it is
