import pytest
import torch

from flashdist import ConfigError
from flashdist.data import SyntheticImageDataModule, SyntheticTextDataModule
from flashdist.text import TextClassifier


def test_synthetic_images_are_deterministic_split_and_shaped():
    a = SyntheticImageDataModule(num_classes=3, num_samples=40, image_size=8, num_channels=1, val_fraction=0.25, batch_size=8)
    b = SyntheticImageDataModule(num_classes=3, num_samples=40, image_size=8, num_channels=1, val_fraction=0.25, batch_size=8)
    a.setup("fit"), b.setup("fit")
    assert len(a.train_set) == 30 and len(a.val_set) == 10
    images, labels = next(iter(a.val_dataloader()))
    assert images.shape == (8, 1, 8, 8) and labels.dtype == torch.long and int(labels.max()) < 3
    # Every rank builds the same data from the seed: DistributedSampler then shards it.
    assert torch.equal(a.train_set[5][0], b.train_set[5][0])
    assert a.num_classes == 3


def test_no_validation_split_means_no_val_loader():
    data = SyntheticImageDataModule(num_samples=16, image_size=4, val_fraction=0.0, batch_size=4)
    assert data.val_dataloader() == [] and len(data.train_dataloader()) == 4


def test_synthetic_text_batches_feed_a_text_classifier():
    data = SyntheticTextDataModule(num_classes=2, num_samples=32, seq_length=8, vocab_size=50, batch_size=4)
    batch = next(iter(data.train_dataloader()))
    ids = batch["input"]["input_ids"]
    assert ids.shape == (4, 8) and int(ids.min()) >= 1 and int(ids.max()) <= data.max_token_id == 49
    model = TextClassifier(num_classes=2, backbone="tiny-bert")
    assert model(batch["input"]).shape == (4, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes=1 must be an int of at least 2"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"val_fraction": 1.0}, r"val_fraction=1.0 must be a number in \[0, 1\)"),
        ({"noise": -1}, "noise=-1"),
        ({"drop_last": "yes"}, "drop_last='yes'"),
        ({"num_samples": 2, "val_fraction": 0.1}, "leaves an empty split"),
    ],
)
def test_synthetic_image_refusals(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticImageDataModule(**kwargs).setup("fit")


def test_synthetic_text_vocab_must_leave_words_per_class():
    with pytest.raises(ConfigError, match="vocab_size=5"):
        SyntheticTextDataModule(num_classes=2, vocab_size=5)
