"""Real parts for the language-model tests, made in the test: a WordLevel tokenizer trained with
``tokenizers``, a tiny Llama saved with ``save_pretrained`` next to it, and a learnable corpus."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

# The generator that wrote configs/data/pairs.jsonl (a script, not a package module).
pairs = runpy.run_path(str(Path(__file__).parents[2] / "configs" / "data" / "make_pairs.py"))["pairs"]

SEQ_LENGTH = 32


def write_pairs(path: Path, count: int = 300) -> Path:
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs(count)))
    return path


def train_word_tokenizer(texts: list[str], out_dir: Path) -> Path:
    """A WordLevel tokenizer over ``texts`` (words and punctuation), saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_tiny_llama(out_dir: Path, vocab_size: int, max_positions: int = 64, seed: int = 0) -> Path:
    """A ~100k-parameter Llama written by save_pretrained (config.json + model.safetensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=max_positions, tie_word_embeddings=False,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def local_backbone(root: Path, count: int = 300) -> tuple[Path, Path]:
    """(model directory with its tokenizer, pairs.jsonl) under ``root``."""
    data = write_pairs(root / "pairs.jsonl", count)
    texts = [p["prompt"] + p["completion"] for p in pairs(count)]
    model_dir = root / "tiny-llama-local"
    train_word_tokenizer(texts, model_dir)
    from transformers import AutoTokenizer

    save_tiny_llama(model_dir, vocab_size=len(AutoTokenizer.from_pretrained(model_dir)))
    return model_dir, data
