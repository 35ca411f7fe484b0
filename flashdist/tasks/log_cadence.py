"""When a Task's per-step metrics (``train_loss``) are worth a ``self.log``: only when someone reads them.

Lightning's ``self.log`` costs about a tenth of a 1 ms step (profiled: a third or more of plain
Lightning's excess over a hand-written loop), and a value logged with ``prog_bar=True`` is read
on the host (``.item()``: a host sync, a blocking device-to-host copy on a GPU) at the end of
every batch, whether or not a bar is shown. Between the steps where a reader looks, the value
would only be held. So a Task logs a training step's metrics (Lightning's ``on_step`` meaning:
that step's value, as before) on the steps where

- the loggers write (Lightning's own decision, every ``log_every_n_steps``),
- the progress bar refreshes (every ``refresh_rate`` batches, and the epoch's last),
- the epoch's last batch runs or ``max_steps`` is reached (``trainer.callback_metrics`` after the fit),

and on every step when a callback monitors a training metric (``ModelCheckpoint(monitor=
"train_loss")``, ``EarlyStopping``): it reads ``callback_metrics`` at steps of its own choosing.
``prog_bar=True`` only when a bar is shown (Lightning reads a prog_bar value on the host at the end
of every batch, logged that step or not): then the Task logs a host copy, made at the bar's
cadence, so Lightning's per-batch read is of host memory; without a bar nothing is read.
Between those steps ``trainer.callback_metrics["train_loss"]`` holds the last logged step's value.

The decision is the same on every rank (the bar counts at rank 0's cadence, where Lightning
shows it, also on the ranks where Lightning disabled it), so a metric summed over the ranks on
the steps it is due is a collective every rank joins (CausalLM's token-weighted ``train_loss``).
"""

from __future__ import annotations

from typing import Any

from flashdist.compat.lightning import loggers_write_this_step


def monitors_training_metric(trainer: Any) -> bool:
    """Whether a callback (ModelCheckpoint, EarlyStopping, ...) monitors a metric other than a validation one.

    Example:
        >>> class Trainer: callbacks = [type("ModelCheckpoint", (), {"monitor": "train_loss"})()]
        >>> monitors_training_metric(Trainer())
        True
    """
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and not monitor.startswith("val"):
            return True
    return False


def shown_bar_refresh_rate(trainer: Any) -> int:
    """The progress bar's refresh rate in batches; 0 when no bar is shown."""
    bar = trainer.progress_bar_callback
    if bar is None or not bar.is_enabled:
        return 0
    return max(int(bar.refresh_rate), 1)


def rank_zero_bar_refresh_rate(trainer: Any) -> int:
    """The progress bar's refresh rate in batches as rank 0 shows it, read the same on every rank; 0 without a bar.

    Lightning disables the bar on the other ranks (``ProgressBar.setup``), so their ``is_enabled`` differs.
    """
    bar = trainer.progress_bar_callback
    if bar is None or not getattr(bar, "refresh_rate", 0):
        return 0
    return max(int(bar.refresh_rate), 1)


def step_metrics_due(trainer: Any, batch_idx: int, training_metric_monitored: bool) -> bool:
    """Whether this training step's metrics have a reader (see the module docstring); the same on every rank, cheap enough for every step.

    ``training_metric_monitored`` is :func:`monitors_training_metric`'s answer, decided once per fit
    by the caller (the callbacks do not change during a fit).
    """
    if trainer.fast_dev_run or training_metric_monitored:
        return True
    if trainer.loggers and loggers_write_this_step(trainer):
        return True
    rate = rank_zero_bar_refresh_rate(trainer)
    if rate and (batch_idx + 1) % rate == 0:
        return True
    if trainer.is_last_batch:
        return True
    return 0 < trainer.max_steps <= trainer.global_step + 1
