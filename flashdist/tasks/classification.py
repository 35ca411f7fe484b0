"""``ClassificationTask``: cross-entropy and accuracy (logged as ``val_accuracy``) by default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchmetrics
from torch import nn

from flashdist.tasks.model import MetricsArg, Task


class ClassificationTask(Task):
    """A Task for ``num_classes``-way classification.

    Example:
        >>> task = ClassificationTask(nn.Linear(4, 3), num_classes=3, optimizer="sgd", learning_rate=0.1)
        >>> list(task.val_metrics.keys())
        ['val_accuracy']
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        num_classes: int | None = None,
        metrics: MetricsArg = None,
        # A named default, not kwargs.setdefault: config systems (LightningCLI) pass every
        # argument explicitly, and a setdefault never fires when loss_fn=None arrives.
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = nn.functional.cross_entropy,
        **kwargs: Any,
    ):
        if metrics is None and num_classes is not None:
            metrics = {"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)}
        super().__init__(model=model, metrics=metrics, loss_fn=loss_fn, **kwargs)
        self.num_classes = num_classes
