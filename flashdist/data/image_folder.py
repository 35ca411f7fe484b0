"""Images in class-per-subdirectory folders (``train/cat/1.png``), read with Pillow.

The class list comes from ``train_dir``'s subdirectories (sorted) and is checked in
``__init__``, so an empty or misnamed folder is refused before any process is launched.
Images are decoded lazily, one per item, so a large folder costs no memory up front.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from flashdist.data.base import FlashdistDataModule, check_fraction, check_positive_int
from flashdist.errors import ConfigError

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_MODES = {1: "L", 3: "RGB"}


class ImageFolderDataModule(FlashdistDataModule):
    """Batches ``(images, labels)``: float images in [-1, 1], ``(num_channels, image_size, image_size)``.

    Example:
        >>> data = ImageFolderDataModule("data/train", val_dir="data/val", image_size=64)  # doctest: +SKIP
        >>> data.classes  # doctest: +SKIP
        ['cat', 'dog']
    """

    def __init__(
        self,
        train_dir: str,
        val_dir: str | None = None,
        image_size: int = 32,
        num_channels: int = 3,
        val_fraction: float = 0.0,
        batch_size: int = 32,
        num_workers: int = 0,
        drop_last: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, drop_last)
        self.image_size = check_positive_int("image_size", image_size)
        if num_channels not in _MODES:
            raise ConfigError(f"num_channels={num_channels!r} is not supported.", accepted=[str(c) for c in _MODES])
        self.num_channels = num_channels
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        if val_dir is not None and self.val_fraction:
            raise ConfigError("both val_dir and val_fraction were given.", hint="hold out a fraction or give a folder, not both.")
        self.seed = int(seed)
        self.train_dir = Path(train_dir)
        self.val_dir = Path(val_dir) if val_dir is not None else None
        self.classes = class_names(self.train_dir)
        if self.val_dir is not None:
            unknown = sorted(set(class_names(self.val_dir, minimum=1)) - set(self.classes))
            if unknown:
                raise ConfigError(f"val_dir {str(self.val_dir)!r} has classes {unknown} that train_dir lacks.", accepted=self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build(self) -> tuple[Dataset, Dataset | None]:
        train = ImageFiles(list_images(self.train_dir, self.classes), self.image_size, self.num_channels)
        if self.val_dir is not None:
            return train, ImageFiles(list_images(self.val_dir, self.classes), self.image_size, self.num_channels)
        return self.split(train, len(train), self.val_fraction, self.seed)


class ImageFiles(Dataset):
    """``(path, label)`` pairs decoded on access: resized, scaled to [-1, 1], channels first."""

    def __init__(self, items: list[tuple[Path, int]], image_size: int, num_channels: int):
        self.items, self.image_size, self.mode = items, image_size, _MODES[num_channels]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(self.mode).resize((self.image_size, self.image_size)), dtype=np.float32)
        tensor = torch.from_numpy(pixels.copy()).reshape(self.image_size, self.image_size, -1).permute(2, 0, 1)
        return tensor / 127.5 - 1.0, label


def class_names(root: Path, minimum: int = 2) -> list[str]:
    """Sorted names of ``root``'s subdirectories: the classes (a validation folder may hold fewer)."""
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} does not exist.", hint="give the folder that holds one subfolder per class.")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < minimum:
        raise ConfigError(f"image folder {str(root)!r} has {len(names)} class subfolder(s); it needs at least {minimum}.",
                          hint="lay images out as <folder>/<class name>/<image file>.")
    return names


def list_images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """Every image under ``root/<class>/`` (recursively, sorted) with its class index."""
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue  # a validation folder may lack a class
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        items += [(p, label) for p in files]
    if not items:
        raise ConfigError(f"image folder {str(root)!r} has no image files.", accepted=IMAGE_SUFFIXES)
    return items
