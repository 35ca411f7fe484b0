"""Where language-modeling text comes from: local files by suffix, or a ``save_to_disk`` directory.

Everything here is cheap and runs in ``__init__`` (before any process is launched): the files
exist, their format is known, and the named fields are among the dataset's columns. Reading
the rows is left to Hugging Face ``datasets`` (``load_text``), once, on rank 0.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flashdist.errors import ConfigError

# suffix → the `datasets` builder that reads it
FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text", ".text": "text"}
DISK = "load_from_disk"


def as_paths(files: str | Path | Sequence[str | Path], what: str) -> tuple[Path, ...]:
    """``files`` as existing paths of one format; a ConfigError names a missing one and what is there."""
    items = [files] if isinstance(files, (str, Path)) else list(files)
    if not items:
        raise ConfigError(f"{what} is empty.", hint=f"{what}: data/train.jsonl (or a list of files).")
    paths = tuple(Path(item).expanduser() for item in items)
    for path in paths:
        if not path.exists():
            parent = path.parent
            held = sorted(p.name for p in parent.iterdir())[:12] if parent.is_dir() else None
            where = f"{parent} holds {held}" if held is not None else f"{parent} does not exist either"
            raise ConfigError(f"{what}: {str(path)!r} does not exist ({where}).", hint="give an existing file or directory.")
    kinds = {format_of(path, what) for path in paths}
    if len(kinds) > 1:
        raise ConfigError(f"{what} mixes formats {sorted(kinds)}.", hint="give files of one format.")
    return paths


def format_of(path: Path, what: str = "train_files") -> str:
    if path.is_dir():
        if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
            raise ConfigError(f"{what}: {str(path)!r} is a directory but not one written by Dataset.save_to_disk() "
                              f"(it holds {sorted(p.name for p in path.iterdir())[:12]}).", accepted=[*FORMATS, "a save_to_disk directory"])
        return DISK
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{what}: {str(path)!r} has an unknown format.", accepted=sorted(FORMATS) + ["a save_to_disk directory"],
                          hint="name the file by its format (.jsonl, .csv, .parquet, .txt).")
    return kind


def columns_of(path: Path) -> list[str]:
    """The dataset's column names, read from the first record or the schema only."""
    kind = format_of(path)
    if kind == "text":
        return ["text"]
    if kind == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if kind == DISK:
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise ConfigError(f"{str(path)!r} is a DatasetDict without a 'train' split.", accepted=sorted(loaded))
            loaded = loaded["train"]
        return list(loaded.column_names)
    return _json_columns(path)


def column_kinds(path: Path) -> dict[str, str]:
    """Each column's value type, from the first record (JSON) or the schema: ``str``, ``list``, ``dict``, ``int``…

    Example:
        >>> column_kinds(Path("chats.jsonl"))  # doctest: +SKIP
        {'messages': 'list', 'id': 'int'}
    """
    kind = format_of(path)
    if kind in ("text", "csv"):
        return dict.fromkeys(columns_of(path), "str")
    if kind in ("parquet", DISK):
        if kind == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
        else:
            import datasets

            loaded = datasets.load_from_disk(str(path))
            schema = (loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded).data.schema
        return {field.name: _arrow_kind(field.type) for field in schema}
    record = _first_json_record(path)
    return {key: type(value).__name__ for key, value in record.items()}


def _arrow_kind(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "list"
    if pa.types.is_struct(arrow_type):
        return "dict"
    return str(arrow_type)


def _first_json_record(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                return record if isinstance(record, dict) else record[0]
    document = json.loads(path.read_text(encoding="utf-8"))
    return document[0]


def _json_columns(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a pretty-printed JSON document: read it whole below
            if isinstance(record, dict):
                return list(record)
            if isinstance(record, list) and record and isinstance(record[0], dict):
                return list(record[0])
            raise ConfigError(f"{path}:{number} is a {type(record).__name__}, not a JSON object.")
    document = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(document, list) and document and isinstance(document[0], dict):
        return list(document[0])
    raise ConfigError(f"{path} holds no JSON objects.", hint="JSONL: one object per line, e.g. {\"text\": \"...\"}.")


def check_fields(paths: Sequence[Path], fields: dict[str, str | None], what: str) -> None:
    """Every given field must be a column of every file; the error lists the columns there are."""
    for path in paths:
        columns = columns_of(path)
        for key, field in fields.items():
            if field is not None and field not in columns:
                raise ConfigError(f"{key}={field!r} is not a column of {what} {str(path)!r}.", accepted=columns,
                                  hint=f"set {key} to one of the columns above.")


def load_text(paths: Sequence[Path], cache_dir: Path) -> Any:
    """The rows as one ``datasets.Dataset`` (memory-mapped Arrow under ``cache_dir``)."""
    import datasets

    kind = format_of(paths[0])
    if kind == DISK:
        parts = []
        for path in paths:
            loaded = datasets.load_from_disk(str(path))
            parts.append(loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded)
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return datasets.load_dataset(kind, data_files=[str(p) for p in paths], split="train", cache_dir=str(cache_dir))
