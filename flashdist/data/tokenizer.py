"""A deterministic word-hashing tokenizer: no vocabulary file, nothing to download.

Words map to ids by CRC32 (stable across processes and runs, unlike Python's ``hash``), so
every rank tokenizes identically. Collisions are the price; for real text, point
``TextFileDataModule(tokenizer=...)`` at a local Hugging Face tokenizer directory instead.
"""

from __future__ import annotations

import re
import zlib

import torch

from flashdist.errors import ConfigError

PAD_ID, CLS_ID, SEP_ID = 0, 1, 2
_FIRST_WORD_ID = 3
_WORDS = re.compile(r"\w+|[^\w\s]")


class HashingTokenizer:
    """``[CLS] words... [SEP]``, padded with 0 and truncated to ``max_length``.

    Example:
        >>> ids, mask = HashingTokenizer(vocab_size=100, max_length=6).encode(["Hello, world"])
        >>> ids.shape, mask[0].tolist()
        (torch.Size([1, 6]), [1, 1, 1, 1, 1, 0])
    """

    def __init__(self, vocab_size: int = 1000, max_length: int = 64, lowercase: bool = True):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= _FIRST_WORD_ID:
            raise ConfigError(f"vocab_size={vocab_size!r} must be an int above {_FIRST_WORD_ID} (ids 0-2 are reserved).")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length={max_length!r} must be an int of at least 2 ([CLS] and [SEP]).")
        self.vocab_size, self.max_length, self.lowercase = vocab_size, max_length, lowercase

    def word_id(self, word: str) -> int:
        return _FIRST_WORD_ID + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - _FIRST_WORD_ID)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention masks, both ``(len(texts), max_length)`` long tensors."""
        input_ids = torch.full((len(texts), self.max_length), PAD_ID, dtype=torch.long)
        for row, text in enumerate(texts):
            words = _WORDS.findall(text.lower() if self.lowercase else text)[: self.max_length - 2]
            ids = [CLS_ID, *(self.word_id(w) for w in words), SEP_ID]
            input_ids[row, : len(ids)] = torch.tensor(ids)
        return input_ids, (input_ids != PAD_ID).long()
