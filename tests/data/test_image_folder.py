import numpy as np
import pytest
import torch
from PIL import Image

from flashdist import ConfigError
from flashdist.data import ImageFolderDataModule


def write_images(root, counts: dict[str, int], size=(10, 6), mode="RGB"):
    for index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = np.full((size[1], size[0], 3), 40 * index + i, dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return root


def test_class_per_subdirectory_images_load_resized_and_scaled(tmp_path):
    train = write_images(tmp_path / "train", {"cat": 3, "dog": 2})
    (train / "notes.txt").write_text("ignored: not a class folder")
    (train / "cat" / "readme.md").write_text("ignored: not an image")
    val = write_images(tmp_path / "val", {"dog": 1})
    data = ImageFolderDataModule(str(train), val_dir=str(val), image_size=8, batch_size=2)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2
    data.setup("fit")
    assert len(data.train_set) == 5 and len(data.val_set) == 1
    image, label = data.val_set[0]
    assert image.shape == (3, 8, 8) and label == 1
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 8, 8) and labels.dtype == torch.long


def test_grayscale_and_val_fraction(tmp_path):
    train = write_images(tmp_path / "train", {"a": 5, "b": 5}, mode="L")
    data = ImageFolderDataModule(str(train), image_size=4, num_channels=1, val_fraction=0.2)
    data.setup("fit")
    assert len(data.train_set) == 8 and len(data.val_set) == 2
    assert data.train_set[0][0].shape == (1, 4, 4)


def test_refusals_name_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "missing"))
    one = write_images(tmp_path / "one", {"only": 1})
    with pytest.raises(ConfigError, match="1 class subfolder.*at least 2"):
        ImageFolderDataModule(str(one))
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True), (empty / "b").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        ImageFolderDataModule(str(empty)).setup("fit")
    train = write_images(tmp_path / "train", {"cat": 1, "dog": 1})
    val = write_images(tmp_path / "val", {"bird": 1})
    with pytest.raises(ConfigError, match=r"classes \['bird'\] that train_dir lacks"):
        ImageFolderDataModule(str(train), val_dir=str(val))
    with pytest.raises(ConfigError, match="num_channels=4"):
        ImageFolderDataModule(str(train), num_channels=4)
