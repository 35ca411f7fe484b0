"""The training order as arithmetic: the user's sampler choice, split over ranks, resumed mid-epoch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from flashdist import ConfigError
from flashdist.data.sampler import describe_order, install_resumable_sampler, sampler_for_loader, sampler_for_user_choice

DATA = list(range(10))


class Reversed(Sampler):
    """A custom order whose epoch changes it (set_epoch): reversed on even epochs, forward on odd."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = range(self.n - 1, -1, -1) if self.epoch % 2 == 0 else range(self.n)
        return iter(order)


def _ranks(sampler: Sampler, world: int, epoch: int = 0) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = sampler_for_user_choice(sampler, DATA, num_replicas=world, rank=rank, seed=7)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@pytest.mark.parametrize(
    "sampler, world, expected",
    [
        (SequentialSampler(DATA), 1, [list(range(10))]),
        (SequentialSampler(DATA), 2, [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]),
        (SequentialSampler(DATA), 3, [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]),  # padded from the start, as DistributedSampler
        (Reversed(10), 2, [[9, 7, 5, 3, 1], [8, 6, 4, 2, 0]]),
        (Reversed(9), 2, [[8, 6, 4, 2, 0], [7, 5, 3, 1, 8]]),  # the sampler's length, not the dataset's
    ],
)
def test_an_order_as_given_is_dealt_round_robin(sampler, world, expected):
    assert _ranks(sampler, world) == expected


def test_a_custom_samplers_epoch_reaches_it():
    assert _ranks(Reversed(4), 2, epoch=1) == [[0, 2], [1, 3]]


def test_shuffled_is_a_permutation_of_seed_and_epoch_only():
    by_hand = torch.randperm(10, generator=torch.Generator().manual_seed(7 + 3)).tolist()  # DistributedSampler's draw
    ranks = _ranks(RandomSampler(DATA), 2, epoch=3)
    assert ranks == [by_hand[0::2], by_hand[1::2]]
    assert _ranks(RandomSampler(DATA), 2, epoch=3) == ranks  # not the global RNG: the same again
    assert _ranks(RandomSampler(DATA), 2, epoch=4) != ranks


def test_a_seeded_generator_gives_the_seed():
    generator = torch.Generator().manual_seed(11)
    assert sampler_for_user_choice(RandomSampler(DATA, generator=generator), DATA, 1, 0).describe() == "shuffled (seed 11)"


def test_a_stateful_dataloader_shuffled_on_2_ranks_is_split_as_a_dataloader_shuffled():
    from torchdata.stateful_dataloader import StatefulDataLoader

    ranks = []
    for rank in (0, 1):
        torch.manual_seed(100 + rank)  # unseeded ranks: each draws its own (torchdata seeds its sampler from it)
        stateful = sampler_for_loader(StatefulDataLoader(DATA, batch_size=2, shuffle=True), num_replicas=2, rank=rank)
        plain = sampler_for_loader(DataLoader(DATA, batch_size=2, shuffle=True), num_replicas=2, rank=rank)
        for sampler in (stateful, plain):
            sampler.set_epoch(1)
        assert list(stateful) == list(plain) and stateful.describe() == "shuffled (seed 0)"
        ranks.append(list(stateful))
    assert sorted(ranks[0] + ranks[1]) == DATA  # each sample once over the ranks
    given = torch.Generator().manual_seed(11)
    assert sampler_for_loader(StatefulDataLoader(DATA, shuffle=True, generator=given), 2, 0).describe() == "shuffled (seed 11)"


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("sampler", [SequentialSampler(DATA), RandomSampler(DATA), Reversed(10)], ids=["seq", "rand", "custom"])
def test_a_resume_after_any_prefix_reads_the_rest_of_the_epoch_once(sampler, world):
    full = sampler_for_user_choice(sampler, DATA, 1, 0, seed=7)
    full.set_epoch(2)
    order = list(full)
    for done in (2, 4, 6):
        rest = []
        for rank in range(world):
            s = sampler_for_user_choice(sampler, DATA, world, rank, seed=7)
            s.set_epoch(2)
            s.resume_at(epoch=2, samples_done=done)
            rest += list(s)
        assert sorted(set(rest)) == sorted(order[done:]) and len(rest) - len(order[done:]) < world  # only padding repeats


def test_an_unsized_custom_sampler_cannot_be_split():
    class Endless(Sampler):
        def __iter__(self):
            yield from range(3)

    with pytest.raises(ConfigError, match="sampler Endless has no length.*HINT: give the sampler a __len__"):
        sampler_for_user_choice(Endless(), DATA, 2, 0)


@pytest.mark.parametrize(
    "loader, described",
    [
        (DataLoader(DATA, shuffle=False), "as given"),
        (DataLoader(DATA, shuffle=True), "shuffled (seed 0)"),
        (DataLoader(DATA, sampler=Reversed(10)), "sampler Reversed, split across ranks"),
        (DataLoader(DATA, sampler=DistributedSampler(DATA, num_replicas=1, rank=0, shuffle=False)), "as given"),
    ],
)
def test_one_process_installs_the_equivalent_resumable_sampler_and_the_plan_names_it(loader, described):
    before = list(loader.batch_sampler)
    assert describe_order(loader) == described
    installed = install_resumable_sampler(loader)
    assert installed is not None and installed.describe() == described
    if described != "shuffled (seed 0)":
        assert list(loader.batch_sampler) == before  # the same order, now resumable
    assert install_resumable_sampler(loader) is installed


class EveryOther(Sampler):
    """A custom sampler shorter than its dataset: the even samples, in order."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n // 2

    def __iter__(self):
        return iter(range(0, self.n, 2))


def test_a_fit_plans_and_reads_a_custom_samplers_order_not_the_datasets_length(tmp_path):
    import flashdist
    from lightning.pytorch import Callback
    from torch import nn
    from torch.utils.data import TensorDataset

    from flashdist.tasks.classification import ClassificationTask

    seen = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.extend(batch[0][:, 0].long().tolist())

    x = torch.cat([torch.arange(32.0)[:, None], torch.randn(32, 3)], dim=1)
    loader = DataLoader(TensorDataset(x, (x[:, 1] > 0).long()), batch_size=4, sampler=EveryOther(32))
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, logger=False,
                                enable_progress_bar=False, enable_checkpointing=False, callbacks=[Record()])
    trainer.fit(ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw"), loader)
    assert seen == list(range(0, 32, 2)) * 2
    assert trainer.ledger.optimizer_steps == trainer.fit_run.plan.planned_total_steps == 8  # 16 samples / 4, 2 epochs


def test_an_unsized_custom_sampler_on_2_ranks_is_refused_before_any_process_starts(tmp_path):
    import flashdist
    from torch import nn
    from torch.utils.data import TensorDataset

    from flashdist.tasks.classification import ClassificationTask

    class Endless(Sampler):
        def __iter__(self):
            yield from range(8)

    x = torch.randn(8, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=2, sampler=Endless())
    trainer = flashdist.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                                logger=False, enable_progress_bar=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match="sampler Endless has no length"):
        trainer.fit(ClassificationTask(nn.Linear(4, 2), num_classes=2, optimizer="adamw"), loader)
    assert trainer.ledger.optimizer_steps == 0 and not (tmp_path / "summary.json").exists()
