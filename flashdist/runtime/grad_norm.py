"""Logs ``grad_norm``, the pre-clip total gradient norm of every optimizer step, on every strategy.

The strategy route computes it (strategies/grad_norm.py; DeepSpeed's engine under DeepSpeed);
this callback asks the route to record it before Lightning clips, and logs it once the
update happened, on the steps where Lightning writes to the loggers (every
``log_every_n_steps``): a ``self.log`` costs about a tenth of a 1 ms step, and on the other
steps Lightning would only hold the value. The ledger writes every update's value into
``lr.csv``'s ``grad_norm`` column.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

from flashdist.compat.lightning import loggers_write_this_step
from flashdist.runtime.fit_run import FitRun


class GradNormMonitor(Callback):
    """One of every fit's callbacks (runtime/callbacks.py); ``grad_norm`` goes to the Trainer's loggers.

    Example:
        >>> trainer = flashdist.Trainer(...)  # doctest: +SKIP
        >>> # "grad_norm" is logged at each of Lightning's logging steps; lr.csv has every step's
    """

    def __init__(self, run: FitRun) -> None:
        self.run = run
        self._logged_at_step = -1

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._logged_at_step = trainer.global_step

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        # Lightning clips right after this hook (DDP, FSDP): the gradients are reduced and unclipped.
        self.run.route.record_grad_norm(pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self._logged_at_step:  # accumulating: no update on this batch
            return
        self._logged_at_step = trainer.global_step
        if not loggers_write_this_step(trainer):
            return
        norm = self.run.route.grad_norm()
        if norm is not None:
            pl_module.log("grad_norm", norm, on_step=True, on_epoch=False)
