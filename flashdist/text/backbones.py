"""Causal-LM backbones: a local ``save_pretrained`` directory, or a tiny config built in code.

flashdist never downloads a model. A directory must hold a ``config.json`` (and usually
weights, ``*.safetensors`` or ``*.bin``, and tokenizer files); anything else is a
``ConfigError`` that lists what the directory does hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashdist.data.byte_tokenizer import BYTE_LEVEL, BYTE_LEVEL_VOCAB_SIZE
from flashdist.errors import ConfigError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _tiny_llama() -> Any:
    from transformers import LlamaConfig

    # ~220k parameters: 4 blocks of width 64, grouped-query attention, tied embeddings.
    return LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


def _tiny_gpt2() -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=512, n_embd=64, n_layer=4, n_head=4, n_positions=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)


# Built-in tiny configs; their tokenizer is the byte-level one (flashdist.data.byte_tokenizer).
TINY_CAUSAL_LM: dict[str, Callable[[], Any]] = {"tiny-llama": _tiny_llama, "tiny-gpt2": _tiny_gpt2}


@dataclass(frozen=True)
class Backbone:
    """Where a model came from and what the data must fit: its tokenizer and its limits."""

    name: str
    tokenizer: str  # a local directory, or "byte-level" for the built-in configs
    max_positions: int | None
    embedding_rows: int


def load_causal_lm(backbone: str) -> tuple[Any, Backbone]:
    """The ``AutoModelForCausalLM`` for ``backbone`` and what it needs of the data.

    Example:
        >>> model, info = load_causal_lm("tiny-llama")
        >>> info.tokenizer, info.max_positions, info.embedding_rows
        ('byte-level', 512, 512)
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if backbone in TINY_CAUSAL_LM:
        model = AutoModelForCausalLM.from_config(TINY_CAUSAL_LM[backbone]())
        tokenizer = BYTE_LEVEL
    else:
        path = check_model_dir(backbone)
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"backbone={backbone!r}: config.json could not be read ({error}).",
                              hint="pass a directory written by save_pretrained().") from None
        if _has_weights(path):
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        else:
            model = AutoModelForCausalLM.from_config(config)
        tokenizer = str(path) if any((path / name).exists() for name in _TOKENIZER_FILES) else ""
    info = Backbone(backbone, tokenizer, max_positions(model.config), model.get_input_embeddings().num_embeddings)
    if tokenizer == BYTE_LEVEL and info.embedding_rows < BYTE_LEVEL_VOCAB_SIZE:  # an invariant of the table above
        raise AssertionError(f"{backbone} has fewer embeddings than the byte-level tokenizer")
    return model, info


def check_model_dir(backbone: str) -> Path:
    """The directory, or a ConfigError saying what is (or is not) there."""
    path = Path(backbone).expanduser()
    if not path.is_dir():
        parent = path.parent if path.parent.is_dir() else None
        nearby = sorted(p.name for p in parent.iterdir())[:10] if parent is not None else []
        raise ConfigError(
            f"backbone={backbone!r} is neither a built-in config nor an existing directory"
            + (f" ({parent} holds {nearby})." if parent is not None else "."),
            accepted=[*TINY_CAUSAL_LM, "a directory written by save_pretrained()"],
            hint="flashdist never downloads models: save one with model.save_pretrained(DIR) and pass DIR.",
        )
    if not (path / "config.json").is_file():
        held = sorted(p.name for p in path.iterdir())[:20]
        raise ConfigError(
            f"backbone={backbone!r} has no config.json; it holds {held or 'nothing'}.",
            hint="pass the directory save_pretrained() wrote (config.json, model.safetensors, tokenizer files).",
        )
    return path


def _has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


def max_positions(config: Any) -> int | None:
    """The longest sequence the model's position embeddings (or RoPE table) were configured for."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None
