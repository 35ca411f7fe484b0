"""A byte-level tokenizer built in code: 256 byte tokens and three specials, nothing to train or download.

It is the tokenizer of the built-in tiny causal-LM backbones (``tiny-llama``, ``tiny-gpt2``):
any text encodes (one token per UTF-8 byte), every rank builds the same one, and it saves
with ``save_pretrained`` like any Hugging Face fast tokenizer, so an exported ``hf_model/``
reloads with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import functools
from typing import Any

BYTE_LEVEL = "byte-level"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2
BYTE_LEVEL_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


@functools.lru_cache(maxsize=1)
def byte_level_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` over bytes: pad 0, bos 1, eos 2, then the 256 bytes.

    Example:
        >>> tok = byte_level_tokenizer()
        >>> tok("hi")["input_ids"], len(tok), tok.eos_token_id
        ([74, 75], 259, 2)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    # BPE without merges over the byte alphabet: one token per byte, fully reversible.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    pad, bos, eos = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=pad, bos_token=bos, eos_token=eos)
