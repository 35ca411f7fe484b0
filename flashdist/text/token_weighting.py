"""Token-weighted loss: an optimizer step's loss is the mean over every learned token of all its micro-batches on all ranks.

With completion-only or assistant-only labels, micro-batches hold different numbers of learned
tokens. A mean per micro-batch, then averaged over the accumulation window and the ranks (what
Lightning and every data-parallel strategy do to whatever ``training_step`` returns), weights
tokens unequally, so the update depends on how the global batch is split. The Hugging Face
Trainer's fix (``num_items_in_batch``) is the one used here:

- before the window's first backward, this rank looks ahead over the rest of its window
  (:func:`flashdist.compat.lightning.peek_training_batches`: the batches the loop will train on
  next, counted, not taken) and counts its learned tokens (``labels[:, 1:] != -100``: the
  targets of next-token prediction); one all-reduce (a sum of one integer) gives ``N``, the
  window's learned tokens on every rank. It stays a tensor: no host sync.
- each micro-batch returns ``S · k · W / N``, ``S`` its sum of token losses. Lightning divides
  what ``training_step`` returns by ``k = accumulate_grad_batches`` (automatic optimization,
  every window, the epoch's short last one included) and ``ddp``, ``fsdp`` (FSDP2) and
  ``deepspeed`` average gradients over the ``W`` data-parallel ranks (flashdist's DeepSpeed
  strategy backs with ``scale_wrt_gas=False``, so the engine does not divide by ``k`` again). The
  accumulated gradient is then ``Σ_ranks Σ_micro-batches ∇S / N``: the gradient of the mean token
  loss of the step, whatever the split.

The step's loss (``train_loss``) is ``Σ_ranks Σ_micro-batches S / N``: each rank keeps its part as
a tensor and the parts are summed across ranks only on the steps something reads it
(flashdist.tasks.log_cadence decides, the same way on every rank).

Example:
    >>> micro_batches_left_in_window(batch_idx=4, accumulate=4, batches_in_epoch=6)  # the epoch's short last window
    2
    >>> gradient_scale(accumulate=2, world_size=2)
    4
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from flashdist.compat.lightning import peek_training_batches, should_accumulate

IGNORE_INDEX = -100  # transformers' label for "not learned"


def learned_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Tokens a batch learns: the shifted targets (``labels[:, 1:]``) that are not ``-100``, as a 0-d tensor.

    Example:
        >>> learned_tokens(torch.tensor([[5, 6, -100, 7], [-100, -100, 8, 9]])).item()
        4
    """
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the learned tokens of the next-token cross-entropy (float32), as transformers' causal-LM loss before its mean.

    Position ``t``'s logits predict ``labels[t + 1]``; the labels are shifted (padded with ``-100``
    at the end) rather than the logits sliced, so the logits are not copied.

    Example:
        >>> import math
        >>> logits, labels = torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]])
        >>> round(token_loss_sum(logits, labels).item() / math.log(4), 6)  # two learned tokens, uniform over 4
        2.0
    """
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].to(logits.device)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def micro_batches_left_in_window(batch_idx: int, accumulate: int, batches_in_epoch: float) -> int | float:
    """Micro-batches from ``batch_idx`` (included) to the end of its accumulation window.

    Windows are Lightning's: ``accumulate`` micro-batches from the epoch's start, the last one cut
    short by the epoch's end (``batches_in_epoch``: ``trainer.num_training_batches``, ``inf`` for a
    loader without a length, whose end the look-ahead finds by exhausting it).

    Example:
        >>> [micro_batches_left_in_window(i, accumulate=4, batches_in_epoch=6) for i in range(6)]
        [4, 3, 2, 1, 2, 1]
    """
    window_end = (batch_idx // accumulate + 1) * accumulate
    return min(window_end, batches_in_epoch) - batch_idx


def gradient_scale(accumulate: int, world_size: int) -> int:
    """What each micro-batch's ``S / N`` is multiplied by: undoes Lightning's ``/ k`` and the ranks' gradient average.

    Example:
        >>> gradient_scale(accumulate=4, world_size=1), gradient_scale(accumulate=1, world_size=2)
        (4, 2)
    """
    return accumulate * world_size


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over every rank (a new tensor; one all-reduce, no barrier, no host read); itself on one process.

    ``torch.distributed`` directly: Lightning's ``strategy.reduce`` adds a barrier before its all-reduce.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_world_size() == 1:
        return value
    total = value.clone()
    torch.distributed.all_reduce(total)
    return total


class TokenWeightedLoss:
    """The token-weighted loss of a fit's micro-batches (module docstring): the window's count, and the step's loss parts.

    One per Task; :meth:`start_epoch` at every epoch start (windows are counted from it).

    Example (in a LightningModule's ``training_step``):
        >>> loss = weighting.micro_batch_loss(self.trainer, batch, batch_idx, token_loss_sum(logits, batch["labels"]))  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.start_epoch()

    def start_epoch(self) -> None:
        self.window: int | None = None  # window index within the epoch that `tokens` counts
        self.tokens: torch.Tensor | None = None  # N: learned tokens of the window on every rank
        self.loss_sum: torch.Tensor | None = None  # this rank's Σ S over the window so far (detached)

    def window_tokens(self, trainer: Any, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """``N`` for ``batch_idx``'s window: counted at the first micro-batch of the window this rank runs (a look-ahead)."""
        accumulate = trainer.accumulate_grad_batches
        window = batch_idx // accumulate
        if window != self.window or self.tokens is None:
            left = micro_batches_left_in_window(batch_idx, accumulate, trainer.num_training_batches)
            ahead = peek_training_batches(trainer, int(min(left, accumulate)) - 1)
            self.tokens = sum_over_ranks(count_window(batch, ahead))
            self.window, self.loss_sum = window, None
        return self.tokens

    def micro_batch_loss(self, trainer: Any, batch: Mapping[str, torch.Tensor], batch_idx: int, loss_sum: torch.Tensor) -> torch.Tensor:
        """What ``training_step`` returns for a micro-batch whose token losses sum to ``loss_sum``: ``S · k · W / N``."""
        tokens = self.window_tokens(trainer, batch, batch_idx).clamp(min=1)  # a window with nothing learned steps with a zero gradient
        part = loss_sum.detach()
        self.loss_sum = part if self.loss_sum is None else self.loss_sum + part
        return loss_sum * gradient_scale(trainer.accumulate_grad_batches, trainer.world_size) / tokens

    def step_loss_part(self, trainer: Any) -> torch.Tensor | None:
        """This rank's part ``Σ S / N`` of the step's loss, on the micro-batch that closes the window; None before."""
        if should_accumulate(trainer) or self.loss_sum is None or self.tokens is None:
            return None
        return self.loss_sum / self.tokens.clamp(min=1)


def count_window(batch: Mapping[str, torch.Tensor], ahead: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """Learned tokens of ``batch`` (on its device) and of the batches ``ahead`` (as the loader yields them), as one tensor.

    Example:
        >>> count_window({"labels": torch.tensor([[1, 2, 3]])}, [{"labels": torch.tensor([[-100, 4]])}]).item()
        3
    """
    count = learned_tokens(batch["labels"])
    if ahead:
        count = count + torch.stack([learned_tokens(b["labels"]) for b in ahead]).sum().to(count.device, non_blocking=True)
    return count
