"""Text classification from CSV or JSONL files: one row per example, a text and a label column.

Labels that are all integers are class indices as written; string labels are sorted and
numbered (or numbered in the order ``labels=`` gives). The files are read once, in
``__init__``, so a missing file or column is refused before any process is launched.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from flashdist.data.base import FlashdistDataModule, TokenDataset, check_fraction, check_positive_int
from flashdist.data.tokenizer import HashingTokenizer
from flashdist.errors import ConfigError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class TextFileDataModule(FlashdistDataModule):
    """Batches ``{"input": {"input_ids", "attention_mask"}, "target"}`` for ``TextClassifier``.

    ``tokenizer="hashing"`` (default) needs no files; any other value is a local directory
    saved by a Hugging Face tokenizer's ``save_pretrained()``.

    Example:
        >>> data = TextFileDataModule("train.csv", text_field="review", label_field="sentiment")  # doctest: +SKIP
        >>> data.labels  # doctest: +SKIP
        ['negative', 'positive']
    """

    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        text_field: str = "text",
        label_field: str = "label",
        labels: list[str] | None = None,
        tokenizer: str = "hashing",
        vocab_size: int = 1000,
        max_length: int = 64,
        val_fraction: float = 0.0,
        batch_size: int = 32,
        num_workers: int = 0,
        drop_last: bool = False,
        seed: int = 0,
    ):
        super().__init__(batch_size, num_workers, drop_last)
        self.text_field, self.label_field = text_field, label_field
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        if val_file is not None and self.val_fraction:
            raise ConfigError("both val_file and val_fraction were given.", hint="hold out a fraction or give a file, not both.")
        self.max_length = check_positive_int("max_length", max_length, minimum=2)
        self.vocab_size = check_positive_int("vocab_size", vocab_size, minimum=4)
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self._train_rows = read_rows(train_file, text_field, label_field)
        self._val_rows = read_rows(val_file, text_field, label_field) if val_file is not None else None
        self.labels, self._label_index = _label_mapping(self._train_rows, labels, train_file)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def max_token_id(self) -> int | None:
        """The largest id a batch can hold with the hashing tokenizer (None: a tokenizer directory decides)."""
        return self.vocab_size - 1 if self.tokenizer == "hashing" else None

    def build(self) -> tuple[Dataset, Dataset | None]:
        train = self._encode(self._train_rows)
        if self._val_rows is not None:
            return train, self._encode(self._val_rows)
        return self.split(train, len(self._train_rows), self.val_fraction, self.seed)

    def _encode(self, rows: list[tuple[str, Any]]) -> Dataset:
        texts = [text for text, _ in rows]
        targets = []
        for text, label in rows:
            if str(label) not in self._label_index:
                raise ConfigError(f"label {label!r} (text {text[:40]!r}) is not one of the training labels.", accepted=self.labels)
            targets.append(self._label_index[str(label)])
        input_ids, attention_mask = self._tokenize(texts)
        return TokenDataset(input_ids, attention_mask, torch.tensor(targets, dtype=torch.long))

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer == "hashing":
            return HashingTokenizer(self.vocab_size, self.max_length).encode(texts)
        path = Path(self.tokenizer)
        if not path.is_dir():
            raise ConfigError(f"tokenizer={self.tokenizer!r} is neither 'hashing' nor a local directory.",
                              hint="flashdist never downloads: save a tokenizer with save_pretrained() and pass its directory.")
        from transformers import AutoTokenizer

        encoded = AutoTokenizer.from_pretrained(path, local_files_only=True)(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return encoded["input_ids"], encoded["attention_mask"]


def read_rows(path: str | Path, text_field: str, label_field: str) -> list[tuple[str, Any]]:
    """``(text, label)`` pairs from a ``.csv`` (header row) or ``.jsonl`` (one object per line) file."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{str(path)!r} has an unknown format.", accepted=sorted(FORMATS), hint="name the file by its format.")
    if not path.is_file():
        raise ConfigError(f"text file {str(path)!r} does not exist.")
    records = _csv_records(path) if kind == "csv" else _jsonl_records(path)
    rows = []
    for number, record in records:
        missing = [f for f in (text_field, label_field) if f not in record]
        if missing:
            raise ConfigError(f"{path}:{number} has no field(s) {missing}.", accepted=sorted(record),
                              hint="set text_field / label_field to the file's column names.")
        rows.append((str(record[text_field]), record[label_field]))
    if not rows:
        raise ConfigError(f"{path} has no examples.")
    return rows


def _csv_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(number, row) for number, row in enumerate(csv.DictReader(handle), start=2)]


def _jsonl_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg}).", hint="JSONL holds one object per line.") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{number} is a {type(record).__name__}, not an object.")
            records.append((number, record))
    return records


def _label_mapping(rows: list[tuple[str, Any]], labels: list[str] | None, source: str) -> tuple[list[str], dict[str, int]]:
    if labels is not None:
        names = [str(label) for label in labels]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ConfigError(f"labels={labels!r} must name at least two distinct classes.")
        return names, {name: index for index, name in enumerate(names)}
    values = {str(label) for _, label in rows}
    if all(_is_int(v) for v in values):
        # Integer labels are class indices already: keep 3 meaning class 3.
        indices = {int(v) for v in values}
        if min(indices) < 0:
            raise ConfigError(f"{source} has negative integer labels {sorted(i for i in indices if i < 0)}.")
        names = [str(i) for i in range(max(indices) + 1)]
    else:
        names = sorted(values)
    if len(names) < 2:
        raise ConfigError(f"{source} has a single label {names!r}; classification needs at least two.")
    return names, {name: index for index, name in enumerate(names)}


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
