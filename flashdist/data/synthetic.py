"""In-code synthetic data for the quickstart and tests: nothing to download, learnable in seconds.

Every rank builds the same tensors from ``seed`` (Lightning's DistributedSampler then shards
them), so DDP, DeepSpeed and FSDP all see one dataset.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from flashdist.data.base import FlashdistDataModule, TokenDataset, check_fraction, check_positive_int
from flashdist.errors import ConfigError


class SyntheticImageDataModule(FlashdistDataModule):
    """Images of ``num_classes`` noisy class prototypes, shaped ``(num_channels, image_size, image_size)``.

    Batches are ``(images, labels)``, as ``ImageClassifier`` expects.

    Example:
        >>> data = SyntheticImageDataModule(num_classes=4, num_samples=64, image_size=8, batch_size=16)
        >>> images, labels = next(iter(data.train_dataloader()))
        >>> tuple(images.shape), data.num_classes
        ((16, 3, 8, 8), 4)
    """

    def __init__(
        self,
        num_classes: int = 4,
        num_samples: int = 1024,
        image_size: int = 16,
        num_channels: int = 3,
        noise: float = 1.0,
        val_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        drop_last: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, drop_last)
        self._num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.image_size = check_positive_int("image_size", image_size)
        self.num_channels = check_positive_int("num_channels", num_channels)
        self.noise = _check_noise(noise)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.seed = int(seed)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def build(self) -> tuple[Dataset, Dataset | None]:
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.num_channels, self.image_size, self.image_size)
        prototypes = torch.randn(self._num_classes, *shape, generator=generator)
        labels = torch.randint(0, self._num_classes, (self.num_samples,), generator=generator)
        images = prototypes[labels] + self.noise * torch.randn(self.num_samples, *shape, generator=generator)
        return self.split(TensorDataset(images, labels), self.num_samples, self.val_fraction, self.seed)


class SyntheticTextDataModule(FlashdistDataModule):
    """Token sequences whose class shows in which words are frequent; for ``TextClassifier``.

    Token 0 is padding and never drawn; every class favours its own slice of the vocabulary.
    Batches are ``{"input": {"input_ids", "attention_mask"}, "target": labels}``.

    Example:
        >>> data = SyntheticTextDataModule(num_classes=2, num_samples=32, seq_length=8, batch_size=4)
        >>> batch = next(iter(data.train_dataloader()))
        >>> tuple(batch["input"]["input_ids"].shape), batch["target"].shape[0]
        ((4, 8), 4)
    """

    def __init__(
        self,
        num_classes: int = 2,
        num_samples: int = 1024,
        seq_length: int = 32,
        vocab_size: int = 1000,
        val_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        drop_last: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, drop_last)
        self._num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.seq_length = check_positive_int("seq_length", seq_length)
        # At least a few words per class beyond padding, or the classes are indistinguishable.
        self.vocab_size = check_positive_int("vocab_size", vocab_size, minimum=1 + 4 * self._num_classes)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.seed = int(seed)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def max_token_id(self) -> int:
        """The largest id a batch can hold (``flashdist fit`` checks it against the model's vocabulary)."""
        return self.vocab_size - 1

    def build(self) -> tuple[Dataset, Dataset | None]:
        generator = torch.Generator().manual_seed(self.seed)
        labels = torch.randint(0, self._num_classes, (self.num_samples,), generator=generator)
        words = self.vocab_size - 1
        # Half the tokens from anywhere, half from the class's own slice of the vocabulary.
        uniform = torch.randint(1, self.vocab_size, (self.num_samples, self.seq_length), generator=generator)
        slice_size = words // self._num_classes
        in_slice = torch.randint(0, slice_size, (self.num_samples, self.seq_length), generator=generator)
        favoured = 1 + labels[:, None] * slice_size + in_slice
        pick = torch.rand(self.num_samples, self.seq_length, generator=generator) < 0.5
        input_ids = torch.where(pick, favoured, uniform)
        dataset = TokenDataset(input_ids, torch.ones_like(input_ids), labels)
        return self.split(dataset, self.num_samples, self.val_fraction, self.seed)


def _check_noise(noise: object) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigError(f"noise={noise!r} must be a non-negative number.")
    return float(noise)
