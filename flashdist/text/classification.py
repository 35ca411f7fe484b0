"""``TextClassifier``: a transformers sequence-classification model from a config (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, GPT2Config, PretrainedConfig

from flashdist.tasks.classification import ClassificationTask
from flashdist.errors import ConfigError
from flashdist.image.classification import _check_num_classes

# Tiny configs built in code, for tests, demos and benchmarks.
TINY_CONFIGS: dict[str, Any] = {
    "tiny-bert": lambda: BertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128
    ),
    # bos/eos inside the vocabulary: GPT2Config's defaults (50256) are out of range for 1000 tokens, and transformers
    # warns about it on every build (no effect on a classifier, which reads only pad_token_id).
    "tiny-gpt2": lambda: GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=2, n_positions=128, pad_token_id=0,
                                    bos_token_id=1, eos_token_id=2),
}


def build_text_model(backbone: str, num_classes: int) -> torch.nn.Module:
    """A sequence classifier from a built-in tiny config or a local directory (config, and weights if saved)."""
    if backbone in TINY_CONFIGS:
        config: PretrainedConfig = TINY_CONFIGS[backbone]()
        config.num_labels = num_classes
        return AutoModelForSequenceClassification.from_config(config)
    path = Path(backbone)
    if not path.is_dir():
        raise ConfigError(
            f"backbone={backbone!r} is neither a built-in config nor a local directory.",
            accepted=sorted(TINY_CONFIGS),
            hint="flashdist never downloads models: pass a directory written by save_pretrained().",
        )
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    if has_weights:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_classes, ignore_mismatched_sizes=True)
    config = AutoConfig.from_pretrained(path, num_labels=num_classes)
    return AutoModelForSequenceClassification.from_config(config)


class TextClassifier(ClassificationTask):
    """Classify token sequences. Inputs are dicts of tensors (``input_ids``, ``attention_mask``).

    Example:
        >>> model = TextClassifier(num_classes=2, backbone="tiny-bert")
        >>> model({"input_ids": torch.ones(1, 8, dtype=torch.long)}).shape
        torch.Size([1, 2])
    """

    def __init__(self, num_classes: int, backbone: str = "tiny-bert", **kwargs: Any):
        _check_num_classes(num_classes)
        super().__init__(model=build_text_model(backbone, num_classes), num_classes=num_classes, **kwargs)
        self.backbone = backbone

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits
