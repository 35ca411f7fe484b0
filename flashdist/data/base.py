"""What every flashdist DataModule shares: argument checks, the train/val split and the loaders."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from flashdist.errors import ConfigError, require_int_at_least


class TokenDataset(Dataset):
    """Items as ``{"input": {"input_ids", "attention_mask"}, "target"}``; the default collate stacks them."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        self.input_ids, self.attention_mask, self.labels = input_ids, attention_mask, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "input": {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]},
            "target": self.labels[index],
        }


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    return require_int_at_least(value, f"{name}={value!r}", minimum)


def check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name}={value!r} must be a number in [0, 1).", hint=f"{name}: 0.1 holds out 10%.")
    return float(value)


def split_indices(num_items: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded shuffle split, identical on every rank (each rank builds its own copy of the data)."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed)).tolist()
    num_val = int(round(num_items * val_fraction))
    return sorted(order[num_val:]), sorted(order[:num_val])


class FlashdistDataModule(LightningDataModule):
    """Loaders over ``self.train_set`` / ``self.val_set``, which subclasses fill in ``setup``.

    ``drop_last`` is passed through unchanged: flashdist's step plan reads it from the loader.
    """

    def __init__(self, batch_size: int, num_workers: int, drop_last: bool):
        super().__init__()
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.num_workers = check_positive_int("num_workers", num_workers, minimum=0)
        if not isinstance(drop_last, bool):
            raise ConfigError(f"drop_last={drop_last!r} must be true or false.")
        self.drop_last = drop_last
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._built = False

    def setup(self, stage: str | None = None) -> None:
        # Once per process, whatever the stage: the data is small or lazily read, and a
        # second build would only cost time.
        if not self._built:
            self.train_set, self.val_set = self.build()
            self._built = True

    def build(self) -> tuple[Dataset, Dataset | None]:
        """Return (train set, validation set or None)."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def split(self, dataset: Dataset, num_items: int, val_fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
        if val_fraction == 0.0:
            return dataset, None
        train_idx, val_idx = split_indices(num_items, val_fraction, seed)
        if not train_idx or not val_idx:
            raise ConfigError(f"val_fraction={val_fraction} of {num_items} items leaves an empty split.",
                              hint="use more data or a val_fraction that keeps both splits non-empty.")
        return Subset(dataset, train_idx), Subset(dataset, val_idx)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, shuffle=True, drop_last=self.drop_last)

    def train_loader_before_launch(self) -> DataLoader:
        """The train loader, for ``flashdist.Trainer.fit`` to plan steps before any rank starts.

        ``setup`` builds once per process, so under Lightning's launcher (rank 0 is the
        launching process) the data is not built twice.
        """
        return self.train_dataloader()

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        # An empty list tells Lightning "no validation" without a warning per epoch.
        return self._loader(self.val_set, shuffle=False, drop_last=False) if self.val_set is not None else []

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
