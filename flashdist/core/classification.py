"""``ClassificationTask``: cross-entropy and accuracy (logged as ``val_accuracy``) by default."""

from __future__ import annotations

from typing import Any

import torchmetrics
from torch import nn

from flashdist.core.model import MetricsArg, Task


class ClassificationTask(Task):
    """A Task for ``num_classes``-way classification.

    Example:
        >>> task = ClassificationTask(nn.Linear(4, 3), num_classes=3, optimizer="sgd", learning_rate=0.1)
        >>> list(task.val_metrics.keys())
        ['val_accuracy']
    """

    def __init__(self, model: nn.Module | None = None, num_classes: int | None = None, metrics: MetricsArg = None, **kwargs: Any):
        if metrics is None and num_classes is not None:
            metrics = {"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)}
        kwargs.setdefault("loss_fn", nn.functional.cross_entropy)
        super().__init__(model=model, metrics=metrics, **kwargs)
        self.num_classes = num_classes
