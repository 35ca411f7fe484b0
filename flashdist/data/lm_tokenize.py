"""Tokenize and pack language-modeling text once, into a cache every rank reads.

- ``encode``: a row → ``input_ids`` and ``labels``. Plain text learns every token; a
  prompt/completion pair learns the completion only (prompt labels are ``-100``). Each
  document ends with the tokenizer's EOS.
- ``pack`` (``packing=True``): documents concatenated in order and cut into blocks of exactly
  ``seq_length`` tokens (chunks of ``PACK_ROWS`` documents at a time, each chunk's remainder
  dropped, as transformers' ``run_clm`` does). Attention inside a block is plain causal
  attention: a token sees the earlier documents of its block, separated by EOS; no
  cross-document mask and no position reset. Blocks whose labels are all ``-100`` (only
  prompt) are dropped, since they have no loss.
- ``pad`` (``packing=False``): each document truncated or padded to ``seq_length``, padding
  masked out of attention and loss.

The cache key covers the files (path, size, mtime), the tokenizer's files, and every setting
that changes the output, so a changed input re-tokenizes and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flashdist.data.byte_tokenizer import BYTE_LEVEL
from flashdist.data.lm_sources import load_text
from flashdist.errors import ConfigError

PACK_ROWS = 10_000
CACHE_VERSION = 1
TOKENIZE_LOG = "tokenize_log.jsonl"  # one line per real tokenization: who, what, how long


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the tokenized output (and so the cache key)."""

    train_files: tuple[str, ...]
    val_files: tuple[str, ...] | None
    val_fraction: float | None
    tokenizer: str
    seq_length: int
    packing: bool
    text_field: str | None
    prompt_field: str | None
    completion_field: str | None
    seed: int

    def key(self) -> str:
        files = [*self.train_files, *(self.val_files or ())]
        stamp = {"recipe": asdict(self), "files": [_stamp(Path(f)) for f in files], "tokenizer": _tokenizer_stamp(self.tokenizer),
                 "version": CACHE_VERSION}
        return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(path: Path) -> list[Any]:
    targets = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in targets]


def _tokenizer_stamp(source: str) -> str:
    if source == BYTE_LEVEL:
        return BYTE_LEVEL
    digest = hashlib.sha256()
    for path in sorted(Path(source).glob("*")):
        if path.is_file() and path.suffix in (".json", ".model", ".txt"):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def cache_path(root: Path, recipe: Recipe) -> Path:
    return root / f"lm-{recipe.key()}"


def load_tokenizer(source: str) -> Any:
    if source == BYTE_LEVEL:
        from flashdist.data.byte_tokenizer import byte_level_tokenizer

        return byte_level_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=True)


def build_cache(root: Path, recipe: Recipe, rank: int) -> Path:
    """Tokenize (and pack) into ``root/lm-<key>/`` unless it is there; return that path.

    Written to a temporary directory and renamed, so a reader never sees half a cache.
    """
    path = cache_path(root, recipe)
    if path.exists():
        return path
    import datasets

    started = time.perf_counter()
    # datasets writes map()/split results next to the source's Arrow files unless told otherwise;
    # they go to a scratch directory of ours (a save_to_disk source directory stays untouched).
    work = root / f".work-{path.name}-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(recipe.tokenizer)
    train_rows = load_text([Path(f) for f in recipe.train_files], root / "hf-datasets")
    if recipe.val_files:
        val_rows = load_text([Path(f) for f in recipe.val_files], root / "hf-datasets")
    elif recipe.val_fraction:
        split = train_rows.train_test_split(test_size=recipe.val_fraction, seed=recipe.seed, shuffle=True,
                                            train_indices_cache_file_name=str(work / "train-indices.arrow"),
                                            test_indices_cache_file_name=str(work / "val-indices.arrow"))
        train_rows, val_rows = split["train"], split["test"]
    else:
        val_rows = None
    parts = {"train": _tokenize(train_rows, tokenizer, recipe, work / "train")}
    if val_rows is not None:
        parts["validation"] = _tokenize(val_rows, tokenizer, recipe, work / "validation")
    for name, part in parts.items():
        if len(part) == 0:
            what = f"{recipe.seq_length} tokens" if recipe.packing else "tokens with a loss (a completion)"
            raise ConfigError(
                f"the {name} data ({', '.join(recipe.val_files or () if name == 'validation' else recipe.train_files)}) "
                f"yields no sequence of {what} after tokenization.",
                hint="use more text, a smaller data.seq_length, or packing: false.",
            )
    tmp = root / f".tmp-{path.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict(parts).save_to_disk(str(tmp))
    os.replace(tmp, path)
    shutil.rmtree(work, ignore_errors=True)
    record = {"cache": path.name, "rank": rank, "pid": os.getpid(), "documents": len(train_rows),
              "train_sequences": len(parts["train"]), "seconds": round(time.perf_counter() - started, 3)}
    with (root / TOKENIZE_LOG).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return path


def _tokenize(rows: Any, tokenizer: Any, recipe: Recipe, work: Path) -> Any:
    eos = tokenizer.eos_token_id
    columns = list(rows.column_names)

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        if recipe.prompt_field is not None:
            prompts = tokenizer([str(p) for p in batch[recipe.prompt_field]])["input_ids"]
            completions = tokenizer([str(c) for c in batch[recipe.completion_field]], add_special_tokens=False)["input_ids"]
            ids = [p + c + [eos] for p, c in zip(prompts, completions)]
            labels = [[-100] * len(p) + c + [eos] for p, c in zip(prompts, completions)]
        else:
            texts = tokenizer([str(t) for t in batch[recipe.text_field]])["input_ids"]
            ids = [t + [eos] for t in texts]
            labels = [list(t) for t in ids]
        return {"input_ids": ids, "labels": labels}

    encoded = rows.map(encode, batched=True, remove_columns=columns, desc="flashdist: tokenizing", load_from_cache_file=False,
                       cache_file_name=f"{work}-encoded.arrow")
    length = recipe.seq_length
    if recipe.packing:
        def pack(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
            ids = [token for doc in batch["input_ids"] for token in doc]
            labels = [label for doc in batch["labels"] for label in doc]
            blocks = len(ids) // length
            out_ids = [ids[i * length:(i + 1) * length] for i in range(blocks)]
            out_labels = [labels[i * length:(i + 1) * length] for i in range(blocks)]
            keep = [i for i, block in enumerate(out_labels) if any(label != -100 for label in block[1:])]
            return {"input_ids": [out_ids[i] for i in keep], "labels": [out_labels[i] for i in keep]}

        return encoded.map(pack, batched=True, batch_size=PACK_ROWS, desc="flashdist: packing", load_from_cache_file=False,
                            cache_file_name=f"{work}-packed.arrow")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def pad_rows(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            ids, labels = ids[:length], labels[:length]
            if not any(label != -100 for label in labels[1:]):
                continue  # nothing to learn in this row (its completion was cut off)
            fill = length - len(ids)
            out["input_ids"].append(ids + [pad] * fill)
            out["labels"].append(labels + [-100] * fill)
            out["attention_mask"].append([1] * len(ids) + [0] * fill)
        return out

    return encoded.map(pad_rows, batched=True, desc="flashdist: padding", load_from_cache_file=False,
                        cache_file_name=f"{work}-padded.arrow")


def read_tokenize_log(root: Path) -> list[dict[str, Any]]:
    """The records ``build_cache`` appended (tests and people check who tokenized what)."""
    path = root / TOKENIZE_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

