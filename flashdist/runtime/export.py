"""Export at the end of a fit: the Task's full weights, gathered from shards, written by the Task.

Active for a LightningModule with ``export=True`` and a ``save_hf(out_dir, state_dict)``
method (:class:`~flashdist.text.CausalLM`). After a fit that ran to its end (not preempted,
not interrupted) every rank joins the gather (``StrategyRoute.full_state_dict``: ZeRO-3
partitions and FSDP2 shards are collectives), rank 0 writes ``<default_root_dir>/hf_model/``,
and all ranks wait for it before the fit returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from flashdist.runtime.fit_run import FitRun

EXPORT_DIR = "hf_model"


class HFExport(Callback):
    """Writes ``hf_model/`` once a fit completed; added to every ``flashdist.Trainer``."""

    def __init__(self, run: FitRun) -> None:
        self.run = run
        self.exported_to: Path | None = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not getattr(pl_module, "export", False) or not callable(getattr(pl_module, "save_hf", None)):
            return
        if trainer.interrupted or self.run.preemption.preempted or trainer.global_step == 0:
            return
        state = self.run.route.full_state_dict(pl_module)
        out = Path(trainer.default_root_dir) / EXPORT_DIR
        if trainer.is_global_zero:
            pl_module.save_hf(out, state)
            rank_zero_info(f"flashdist: exported the trained model to {out}")
        self.exported_to = out
        trainer.strategy.barrier("flashdist-export")
