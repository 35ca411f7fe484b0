"""``ImageClassifier``: ResNet backbones built from transformers' ``ResNetConfig`` (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import ResNetConfig, ResNetForImageClassification

from flashdist.tasks.classification import ClassificationTask
from flashdist.errors import ConfigError, require_int_at_least

# torchvision's ResNets, as transformers configs (random init).
BACKBONES: dict[str, dict[str, Any]] = {
    "resnet18": {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]},
    "resnet34": {"layer_type": "basic", "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 256, 512]},
    "resnet50": {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048]},
    # A test- and demo-sized network: one small stage per depth.
    "resnet_tiny": {"layer_type": "basic", "depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8},
}


def build_backbone(backbone: str, num_classes: int, pretrained: bool | str = False, num_channels: int = 3) -> ResNetForImageClassification:
    """A ResNet classifier: random init, or weights from a local directory (never downloaded)."""
    if isinstance(pretrained, str) or Path(backbone).is_dir():
        path = pretrained if isinstance(pretrained, str) else backbone
        if not Path(path).is_dir():
            raise ConfigError(f"pretrained={path!r} is not a local directory.", hint="flashdist never downloads weights; save them with save_pretrained() first.")
        return ResNetForImageClassification.from_pretrained(path, num_labels=num_classes, ignore_mismatched_sizes=True)
    if pretrained:
        raise ConfigError(
            "pretrained=True would download weights, which flashdist never does at run time.",
            hint="pass pretrained='/path/to/saved/model' (a save_pretrained() directory), or pretrained=False.",
        )
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}.", accepted=sorted(BACKBONES), hint="or pass a local model directory.")
    config = ResNetConfig(num_labels=num_classes, num_channels=num_channels, **BACKBONES[backbone])
    return ResNetForImageClassification(config)


class ImageClassifier(ClassificationTask):
    """Classify images into ``num_classes`` classes.

    Example:
        >>> model = ImageClassifier(num_classes=10, backbone="resnet18", optimizer="Adam", learning_rate=1e-4)
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """

    def __init__(self, num_classes: int, backbone: str = "resnet18", pretrained: bool | str = False, num_channels: int = 3, **kwargs: Any):
        _check_num_classes(num_classes)
        super().__init__(model=build_backbone(backbone, num_classes, pretrained, num_channels), num_classes=num_classes, **kwargs)
        self.backbone = backbone

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=inputs).logits


def _check_num_classes(num_classes: Any) -> None:
    require_int_at_least(num_classes, f"num_classes={num_classes!r}", minimum=2)
