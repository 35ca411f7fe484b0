import json

import pytest
import torch

from flashdist import ConfigError
from flashdist.data import HashingTokenizer, TextFileDataModule


def test_csv_with_string_labels(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('review,sentiment\n"Great film, loved it",positive\nterrible plot,negative\n"fine, I guess",neutral\n')
    data = TextFileDataModule(str(path), text_field="review", label_field="sentiment", max_length=6, batch_size=3)
    assert data.labels == ["negative", "neutral", "positive"] and data.num_classes == 3
    batch = next(iter(data.train_dataloader()))
    assert batch["input"]["input_ids"].shape == (3, 6)
    assert sorted(batch["target"].tolist()) == [0, 1, 2]


def test_jsonl_integer_labels_are_class_indices_and_val_file(tmp_path):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("\n".join(json.dumps({"text": f"example {i}", "label": i % 3}) for i in range(6)) + "\n\n")
    val.write_text(json.dumps({"text": "held out", "label": 2}) + "\n")
    data = TextFileDataModule(str(train), val_file=str(val), batch_size=2)
    assert data.labels == ["0", "1", "2"]
    data.setup("fit")
    assert data.val_set[0]["target"] == 2 and len(data.train_set) == 6


def test_explicit_label_order(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,yes\nb,no\n")
    data = TextFileDataModule(str(path), labels=["yes", "no"])
    data.setup("fit")
    assert [int(data.train_set[i]["target"]) for i in range(2)] == [0, 1]


def test_hashing_tokenizer_is_deterministic_and_bounded():
    tokenizer = HashingTokenizer(vocab_size=20, max_length=5)
    ids, mask = tokenizer.encode(["The cat sat on the mat", "Hi"])
    again, _ = HashingTokenizer(vocab_size=20, max_length=5).encode(["the CAT sat on the mat", "hi"])
    assert torch.equal(ids, again)
    assert ids[0, 0] == 1 and ids[0, -1] == 2 and int(ids.max()) < 20  # [CLS] ... [SEP] after truncation
    assert mask[1].tolist() == [1, 1, 1, 0, 0]


@pytest.mark.parametrize(
    "name, content, kwargs, match",
    [
        ("t.txt", "x", {}, "unknown format"),
        ("t.csv", "text,tag\na,b\n", {}, r"has no field\(s\) \['label'\]"),
        ("t.jsonl", '{"text": "a", "label": 1}\nnot json\n', {}, "t.jsonl:2 is not valid JSON"),
        ("t.jsonl", '[1, 2]\n', {}, "is a list, not an object"),
        ("t.csv", "text,label\na,x\n", {}, "single label"),
        ("t.csv", "text,label\na,x\nb,y\n", {"val_fraction": 0.5, "val_file": "v.csv"}, "both val_file and val_fraction"),
    ],
)
def test_refusals(tmp_path, name, content, kwargs, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        TextFileDataModule(str(path), **kwargs)


def test_missing_file_and_unseen_validation_label(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TextFileDataModule(str(tmp_path / "nope.csv"))
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("text,label\na,x\nb,y\n")
    val.write_text("text,label\nc,z\n")
    with pytest.raises(ConfigError, match="label 'z'"):
        TextFileDataModule(str(train), val_file=str(val)).setup("fit")
