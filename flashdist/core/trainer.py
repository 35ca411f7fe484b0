"""``flashdist.Trainer``: Lightning's Trainer, plus the step plan and the ledger on every fit."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from flashdist.core.ledger import StepLedger
from flashdist.core.planning import reset_plan


class Trainer(pl.Trainer):
    """A ``lightning.Trainer`` whose fits plan their steps and prove the plan.

    ``strict_ledger=False`` turns a planned-vs-taken mismatch from an error into a warning.

    Example:
        >>> trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
        >>> any(type(c).__name__ == "StepLedger" for c in trainer.callbacks)
        True
    """

    def __init__(self, *args: Any, strict_ledger: bool = True, **kwargs: Any):
        from flashdist.strategies.names import resolve_strategy

        strategy = kwargs.get("strategy", "auto")
        self.strategy_name = strategy if isinstance(strategy, str) else type(strategy).__name__
        kwargs["strategy"] = resolve_strategy(strategy, kwargs.get("accelerator", "auto"))
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, StepLedger) for c in callbacks):
            callbacks.append(StepLedger(strict=strict_ledger))
        super().__init__(*args, callbacks=callbacks, **kwargs)

    @property
    def ledger(self) -> StepLedger:
        return next(c for c in self.callbacks if isinstance(c, StepLedger))

    def fit(self, *args: Any, **kwargs: Any) -> None:
        reset_plan(self)
        super().fit(*args, **kwargs)
