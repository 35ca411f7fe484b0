"""Tokenize and pack language-modeling text once, into a cache every rank reads.

- ``encode``: a row → ``input_ids`` and ``labels`` (``-100`` where nothing is learned). Plain
  text learns every token and ends with the tokenizer's EOS; a prompt/completion pair of
  strings learns the completion (and EOS). A conversation (``messages``) is its chat-template
  rendering, tokens exactly ``apply_chat_template(messages, tokenize=True)``, learned per
  ``train_on`` (flashdist.data.chat); TRL's conversational prompt/completion learns the
  completion's rendering. A document with nothing learned is dropped and counted.
- ``pack`` (``packing=True``, flashdist.data.packing): documents concatenated in order and cut
  into rows of exactly ``seq_length`` tokens (chunks of ``PACK_ROWS`` documents at a time, each
  chunk's remainder dropped, as transformers' ``run_clm`` does), with ``position_ids`` that
  restart at every document start, so the model attends within documents only.
- ``pad`` (``packing=False``): each document cut on the right to ``seq_length`` (counted) and
  padded, padding masked out of attention and loss.

What a split holds (documents, dropped, truncated, rows, learned tokens) is written next to the
rows as ``stats.json``. The cache key covers the files (path, size, mtime), the tokenizer's
files, and every setting that changes the output, so a changed input re-tokenizes and an
unchanged one is reused.
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
from flashdist.data.chat import check_conversation, encode_conversation, encode_prompt_completion
from flashdist.data.lm_sources import load_text
from flashdist.data.packing import pack_rows, pad_row
from flashdist.errors import ConfigError

PACK_ROWS = 10_000
CACHE_VERSION = 2  # 2: position_ids in packed rows, label -100 at every document start, stats.json
STATS_FILE = "stats.json"
ROW = "__flashdist_row"  # a row's number in train_files, carried through the val_fraction split
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
    messages_field: str | None = None
    conversational: bool = False  # prompt/completion values are message lists (TRL's conversational form)
    chat_template: str | None = None  # None: the tokenizer's own
    train_on: str = "assistant"

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
    from flashdist.compat.console import dependency_progress_bars_off

    with dependency_progress_bars_off():  # one line when done, not a bar per map() and save
        record = _build(path, root, recipe, rank)
    validation = f" (+ {record['val_sequences']:,} validation)" if record["val_sequences"] else ""
    print(f"flashdist: tokenized {record['documents']:,} training documents into {record['train_sequences']:,} sequences{validation} "
          f"of up to {recipe.seq_length} tokens in {record['seconds']:.1f} s, cached in {path}", flush=True)
    return path


def _build(path: Path, root: Path, recipe: Recipe, rank: int) -> dict[str, Any]:
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
        # The split shuffles: each row keeps its number in the files, so an error names the row a user can find.
        train_rows = train_rows.add_column(ROW, list(range(len(train_rows))))
        split = train_rows.train_test_split(test_size=recipe.val_fraction, seed=recipe.seed, shuffle=True,
                                            train_indices_cache_file_name=str(work / "train-indices.arrow"),
                                            test_indices_cache_file_name=str(work / "val-indices.arrow"))
        train_rows, val_rows = split["train"], split["test"]
    else:
        val_rows = None
    stats: dict[str, dict[str, int]] = {}
    parts = {}
    for name, rows in (("train", train_rows), ("validation", val_rows)):
        if rows is None:
            continue
        parts[name], stats[name] = _tokenize(rows, tokenizer, recipe, work / name)
        if len(parts[name]) == 0:
            files = ", ".join(recipe.val_files or () if name == "validation" else recipe.train_files)
            if stats[name]["learned_tokens"] == 0 and stats[name]["dropped_nothing_learned"] == stats[name]["documents"]:
                raise ConfigError(f"the {name} data ({files}) has no learned token: every one of its {stats[name]['documents']} "
                                  f"documents has nothing to learn under train_on={recipe.train_on!r}.",
                                  hint="conversations need an assistant turn (or set train_on: all).")
            what = f"{recipe.seq_length} tokens" if recipe.packing else "tokens with a loss (a completion)"
            raise ConfigError(f"the {name} data ({files}) yields no sequence of {what} after tokenization.",
                              hint="use more text, a smaller data.seq_length, or packing: false.")
    tmp = root / f".tmp-{path.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict(parts).save_to_disk(str(tmp))
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=1))
    os.replace(tmp, path)
    shutil.rmtree(work, ignore_errors=True)
    record = {"cache": path.name, "rank": rank, "pid": os.getpid(), "documents": len(train_rows),
              "train_sequences": len(parts["train"]), "val_sequences": len(parts.get("validation", ())),
              "seconds": round(time.perf_counter() - started, 3)}
    with (root / TOKENIZE_LOG).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


def read_stats(path: Path) -> dict[str, dict[str, int]]:
    """What each split of the cache at ``path`` holds: documents, dropped, truncated, rows, learned tokens."""
    stats = path / STATS_FILE
    return json.loads(stats.read_text()) if stats.exists() else {}


def _tokenize(rows: Any, tokenizer: Any, recipe: Recipe, work: Path) -> tuple[Any, dict[str, int]]:
    columns = list(rows.column_names)
    encoder = _encoder(tokenizer, recipe)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        return encoder(batch, batch[ROW] if ROW in batch else indices)

    encoded = rows.map(encode, batched=True, with_indices=True, remove_columns=columns, desc="flashdist: tokenizing",
                       load_from_cache_file=False, cache_file_name=f"{work}-encoded.arrow")
    stats = {"documents": len(rows), "dropped_nothing_learned": 0, "truncated": 0, "dropped_cut_off": 0, "rows": 0, "learned_tokens": 0}
    length = recipe.seq_length

    def learned(labels: list[int]) -> bool:
        return any(label != -100 for label in labels[1:])  # the first token of a document is never predicted

    # The batched maps below run in this process, in order (no num_proc): the counters are exact.
    def rows_of(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        kept = [i for i, labels in enumerate(batch["labels"]) if learned(labels)]
        stats["dropped_nothing_learned"] += len(batch["labels"]) - len(kept)
        ids, labels = [batch["input_ids"][i] for i in kept], [batch["labels"][i] for i in kept]
        if recipe.packing:
            out = pack_rows(ids, labels, length)
        else:
            stats["truncated"] += sum(len(doc) > length for doc in ids)
            padded = [row for row in (pad_row(i, l, length, pad) for i, l in zip(ids, labels)) if row is not None]
            stats["dropped_cut_off"] += len(ids) - len(padded)  # everything they learn lies past seq_length
            out = {key: [row[key] for row in padded] for key in ("input_ids", "labels", "attention_mask")}
        stats["rows"] += len(out["labels"])
        stats["learned_tokens"] += sum(label != -100 for row in out["labels"] for label in row)
        return out

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = encoded.map(rows_of, batched=True, batch_size=PACK_ROWS if recipe.packing else 1000, load_from_cache_file=False,
                      desc="flashdist: packing" if recipe.packing else "flashdist: padding", cache_file_name=f"{work}-rows.arrow")
    return out, stats


def _encoder(tokenizer: Any, recipe: Recipe) -> Any:
    """The batched ``map`` function that turns rows into ``input_ids`` and ``labels``."""
    eos = tokenizer.eos_token_id
    template = recipe.chat_template

    def text(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        if recipe.prompt_field is not None:
            prompts = tokenizer(_strings(batch, recipe.prompt_field, indices))["input_ids"]
            completions = tokenizer(_strings(batch, recipe.completion_field, indices), add_special_tokens=False)["input_ids"]
            ids = [p + c + [eos] for p, c in zip(prompts, completions)]
            labels = [[-100] * len(p) + c + [eos] for p, c in zip(prompts, completions)]
            if recipe.train_on == "all":
                labels = [list(i) for i in ids]
        else:
            ids = [t + [eos] for t in tokenizer(_strings(batch, recipe.text_field, indices))["input_ids"]]
            labels = [list(t) for t in ids]
        return {"input_ids": ids, "labels": labels}

    def messages(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        for row, value in zip(indices, batch[recipe.messages_field]):
            conversation = check_conversation(value, row, recipe.messages_field)
            ids, labels = encode_conversation(tokenizer, template, conversation, recipe.train_on, f"row {row}")
            out["input_ids"].append(ids)
            out["labels"].append(labels)
        return out

    def conversational(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        for row, prompt, completion in zip(indices, batch[recipe.prompt_field], batch[recipe.completion_field]):
            prompt = check_conversation(prompt, row, recipe.prompt_field)
            completion = check_conversation(completion, row, recipe.completion_field)
            ids, labels = encode_prompt_completion(tokenizer, template, prompt, completion, recipe.train_on, f"row {row}")
            out["input_ids"].append(ids)
            out["labels"].append(labels)
        return out

    if recipe.messages_field is not None:
        return messages
    return conversational if recipe.conversational else text


def _strings(batch: dict[str, list[Any]], field: str, indices: list[int]) -> list[str]:
    """The column's values, which must be strings (a repr of anything else would be trained on silently)."""
    values = batch[field]
    for row, value in zip(indices, values):
        if not isinstance(value, str):
            raise ConfigError(f"row {row} of column {field!r} holds {type(value).__name__} {value!r:.60}, not a string.",
                              hint="fix or remove that row.")
    return list(values)


def read_tokenize_log(root: Path) -> list[dict[str, Any]]:
    """The records ``build_cache`` appended (tests and people check who tokenized what)."""
    path = root / TOKENIZE_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

