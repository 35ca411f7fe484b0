"""Step accounting: how many optimizer steps a fit will take, as pure arithmetic.

One function, :func:`plan_steps`, turns what a fit is configured with (dataset length or
per-rank batch count, batch size, data-parallel size, accumulation, epochs, limits) into a
frozen :class:`StepPlan`. It never touches a Trainer or iterates a dataloader, so it answers
for a 512-GPU cluster as fast as for a laptop, and the Trainer only gathers its inputs.

Accumulation semantics (one for every strategy flashdist offers): an optimizer step happens
after every ``accumulate_grad_batches`` micro-batches *and* at the end of every epoch on a
partial window. This is what Lightning does under DDP and FSDP; under DeepSpeed flashdist
tells the engine where each window ends, so the engine agrees (see strategies/deepspeed.py).

Duration units (warmup and other step counts in scheduler kwargs), resolved by
:meth:`StepPlan.resolve_steps`:
- ``int`` / ``"500"``: optimizer steps; ``"500ba"``: the same (one batch = one optimizer step
  of the global batch, composer's meaning).
- ``float`` in (0, 1) / ``"0.1dur"``: a fraction of the total optimizer steps.
- ``"2ep"``: the optimizer steps of the first two epochs (fractions allowed: ``"0.5ep"``).
- ``"2e6tok"`` / ``"500000tok"``: tokens, for packed language-model data where every sample
  holds exactly ``tokens_per_sample`` tokens, so one optimizer step is
  ``global_batch_size × tokens_per_sample`` tokens; without packing it is a ``ConfigError``.
Rounding: fractions round *up* (``ceil``), as the Hugging Face Trainer's ``warmup_ratio`` does,
so a fraction > 0 never becomes 0 steps.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Literal

from flashdist.errors import ConfigError, require_positive_int

_DURATION = re.compile(r"^\s*(?P<value>(\d+(\.\d*)?|\.\d+)(?P<exponent>[eE][+]?\d+)?)\s*(?P<unit>ep|ba|dur|tok)?\s*$")
Unit = Literal["ba", "ep", "dur", "tok"]


@dataclass(frozen=True)
class StepPlan:
    """What a fit will execute. Field names match ``summary.json``."""

    data_parallel_size: int
    accumulate_grad_batches: int
    max_epochs: int | None
    max_steps: int
    micro_batches_per_epoch_per_rank: int | None  # None: an iterable without a length
    optimizer_steps_per_epoch: tuple[int, ...]  # the epochs that run; empty when unknown
    planned_total_steps: int
    global_batch_size: int | None  # samples per optimizer step across all ranks
    # Lightning's fast_dev_run=N (0: off). The run is a smoke test of N batches, so a schedule
    # written for the full run may be longer than it: builders warn instead of refusing.
    fast_dev_run: int = 0
    tokens_per_sample: int | None = None  # packed LM data: every sample is this many tokens
    max_tokens: int | None = None  # the token budget max_steps was derived from, if any

    @property
    def epochs(self) -> int:
        return len(self.optimizer_steps_per_epoch)

    @property
    def tokens_per_step(self) -> int | None:
        """Tokens in one optimizer step (global batch × tokens per sample), when every sample has the same length."""
        if self.tokens_per_sample is None or self.global_batch_size is None:
            return None
        return self.global_batch_size * self.tokens_per_sample

    @property
    def planned_total_tokens(self) -> int | None:
        per_step = self.tokens_per_step
        return per_step * self.planned_total_steps if per_step is not None else None

    def resolve_steps(self, value: int | float | str, *, what: str = "num_warmup_steps") -> int:
        """Turn a duration (see the module docstring) into optimizer steps.

        Example:
            >>> plan = plan_steps(dataset_size=1000, batch_size=10, max_epochs=2)
            >>> plan.resolve_steps(0.1), plan.resolve_steps("1ep"), plan.resolve_steps("50ba")
            (20, 100, 50)
        """
        amount, unit = parse_duration(value, what=what)
        total = self.planned_total_steps
        if unit == "dur":
            steps = math.ceil(amount * total)
        elif unit == "ep":
            steps = self._steps_in_epochs(amount, what)
        elif unit == "tok":
            steps = tokens_to_steps(amount, self.tokens_per_step, what=f"{what}={value!r}")
        else:
            steps = int(amount)
        return steps

    def _steps_in_epochs(self, epochs: float, what: str) -> int:
        per_epoch = self.optimizer_steps_per_epoch
        if not per_epoch:
            raise ConfigError(
                f"{what}={epochs}ep needs the number of steps per epoch, which is unknown for a dataset without a length.",
                hint="give it in steps ('500ba') or as a fraction ('0.1dur') instead.",
            )
        whole = int(epochs)
        if whole > len(per_epoch) or (whole == len(per_epoch) and epochs > whole):
            raise ConfigError(f"{what}={epochs}ep is longer than the {len(per_epoch)} epoch(s) this fit runs.")
        steps = sum(per_epoch[:whole])
        if epochs > whole:
            steps += math.ceil((epochs - whole) * per_epoch[whole])
        return steps

    def to_dict(self) -> dict:
        out = asdict(self)
        out["optimizer_steps_per_epoch"] = list(self.optimizer_steps_per_epoch)
        out["tokens_per_step"] = self.tokens_per_step
        out["planned_total_tokens"] = self.planned_total_tokens
        return out


def tokens_to_steps(tokens: float, tokens_per_step: int | None, *, what: str) -> int:
    """Optimizer steps that cover ``tokens``, rounded up (as fractions are).

    Example:
        >>> tokens_to_steps(2e6, 32 * 2048, what="num_warmup_steps")
        31
    """
    if tokens_per_step is None:
        raise ConfigError(
            f"{what} is a token count, but this fit's samples do not all have the same number of tokens.",
            hint="token durations need packed data (LanguageModelingDataModule(packing=True)); give steps ('500ba') "
            "or a fraction ('0.1dur') instead.",
        )
    return math.ceil(tokens / tokens_per_step)


def parse_duration(value: int | float | str, *, what: str = "num_warmup_steps") -> tuple[float, Unit]:
    """Split a duration into (amount, unit); refuse anything negative or malformed.

    Example:
        >>> parse_duration("2ep"), parse_duration(0.1), parse_duration(500)
        ((2.0, 'ep'), (0.1, 'dur'), (500.0, 'ba'))
        >>> parse_duration("2e6tok")
        (2000000.0, 'tok')
    """
    accepted = "an int number of steps (500), a fraction in [0, 1) (0.1), or '500ba', '2ep', '0.1dur', '2e6tok'"
    if isinstance(value, bool):
        raise ConfigError(f"{what}={value!r} is a bool.", accepted=accepted)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{what}={value} is negative.", accepted=accepted)
        return float(value), "ba"
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ConfigError(
                f"{what}={value} is a float outside [0, 1).",
                accepted=accepted,
                hint="a float is a fraction of the training steps; write a step count as an int.",
            )
        return value, "dur"
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ConfigError(f"{what}={value!r} is not a duration.", accepted=accepted)
        amount, unit = float(match["value"]), match["unit"]
        if match["exponent"] is not None and unit != "tok":
            raise ConfigError(f"{what}={value!r}: an exponent is accepted for token counts only ('2e6tok').", accepted=accepted)
        if unit == "tok" and (amount != int(amount) or amount < 1):
            raise ConfigError(f"{what}={value!r}: 'tok' takes a whole, positive number of tokens.", accepted=accepted)
        if unit is None:
            if "." in match["value"]:
                return parse_duration(amount, what=what)
            unit = "ba"
        if unit == "dur" and not 0.0 <= amount < 1.0:
            raise ConfigError(f"{what}={value!r}: 'dur' takes a fraction in [0, 1).", accepted=accepted)
        if unit == "ba" and amount != int(amount):
            raise ConfigError(f"{what}={value!r}: 'ba' takes a whole number of steps.", accepted=accepted)
        return amount, unit
    raise ConfigError(f"{what}={value!r} has type {type(value).__name__}.", accepted=accepted)


def per_rank_batches(
    dataset_size: int, batch_size: int, data_parallel_size: int, drop_last: bool
) -> int:
    """Batches one rank's loader yields under Lightning's injected ``DistributedSampler``.

    The sampler pads every rank to ``ceil(N / ranks)`` samples (it repeats samples rather
    than drop any), then the loader batches that, dropping a partial last batch only when
    the *loader* has ``drop_last``.

    Example:
        >>> per_rank_batches(1000, 9, 2, drop_last=False)
        56
    """
    samples_per_rank = math.ceil(dataset_size / data_parallel_size)
    if drop_last:
        return samples_per_rank // batch_size
    return math.ceil(samples_per_rank / batch_size)


def limit_batches(batches: int, limit: int | float | None) -> int:
    """Apply ``limit_train_batches`` exactly as Lightning does.

    The type decides, as in Lightning: an int caps the batches (``1`` is one batch), a float in
    [0, 1] is a fraction, floored (``1.0`` is all of them); a whole float above 1 (``2.0``) is
    read as the int, and any other float above 1 is refused.

    Example:
        >>> limit_batches(10, 1), limit_batches(10, 1.0), limit_batches(10, 0.55), limit_batches(10, 2.0)
        (1, 10, 5, 2)
    """
    if limit is None:
        return batches
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 0 or limit == math.inf:
        raise ConfigError(
            f"limit_train_batches={limit!r} is not a non-negative int or float.",
            accepted="an int (a number of batches) or a float in [0.0, 1.0] (a fraction of them)",
        )
    if isinstance(limit, float) and limit > 1.0:
        if limit != int(limit):
            raise ConfigError(f"limit_train_batches={limit} is a float above 1.0.", hint="use an int to cap batches.")
        limit = int(limit)  # Lightning's _determine_batch_limits reads 2.0 as 2 batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit)


def plan_steps(
    *,
    dataset_size: int | None = None,
    batches_per_rank: int | None = None,
    batch_size: int | None = None,
    drop_last: bool = False,
    data_parallel_size: int = 1,
    accumulate_grad_batches: int = 1,
    max_epochs: int | None = None,
    max_steps: int = -1,
    limit_train_batches: int | float | None = None,
    fast_dev_run: int | bool = 0,
    tokens_per_sample: int | None = None,
    max_tokens: int | None = None,
) -> StepPlan:
    """The optimizer steps a fit with these settings executes.

    Give either ``dataset_size`` and ``batch_size`` (a map-style dataset under the sampler
    Lightning injects), or ``batches_per_rank`` (what one rank's loader yields before
    ``limit_train_batches``), or neither for an iterable without a length (then ``max_steps``
    is required). ``max_epochs=None`` with ``max_steps=-1`` means Lightning's default of 1000.
    ``fast_dev_run=N`` (``True`` is 1) applies Lightning's rule: one epoch, ``max_steps=N`` and
    ``limit_train_batches=N``, whatever those were set to.
    ``max_tokens`` (packed data: ``tokens_per_sample`` set) is a step budget in tokens,
    ``ceil(max_tokens / tokens_per_step)``; it cannot be combined with ``max_steps``.

    Example:
        >>> plan = plan_steps(dataset_size=1000, batch_size=9, data_parallel_size=2,
        ...                   accumulate_grad_batches=3, max_epochs=3)
        >>> plan.micro_batches_per_epoch_per_rank, plan.optimizer_steps_per_epoch, plan.planned_total_steps
        (56, (19, 19, 19), 57)
    """
    _check_positive("data_parallel_size", data_parallel_size)
    _check_positive("accumulate_grad_batches", accumulate_grad_batches)
    if not isinstance(fast_dev_run, int) or fast_dev_run < 0:
        raise ConfigError(f"fast_dev_run={fast_dev_run!r} must be True/False or a non-negative int (a number of batches).")
    fast_dev_run = int(fast_dev_run)
    if fast_dev_run:  # Lightning's _init_debugging_flags
        max_epochs, max_steps, limit_train_batches = 1, fast_dev_run, fast_dev_run
    if max_steps is None:
        max_steps = -1
    if tokens_per_sample is not None:
        _check_positive("tokens_per_sample", tokens_per_sample)
    if max_tokens is not None and not fast_dev_run:  # a smoke run's N batches replace any budget
        _check_positive("max_tokens", max_tokens)
        if max_steps != -1:
            raise ConfigError(f"max_tokens={max_tokens} and max_steps={max_steps} were both given.", hint="give the budget one way.")
        per_step = batch_size * accumulate_grad_batches * data_parallel_size * tokens_per_sample if batch_size and tokens_per_sample else None
        max_steps = tokens_to_steps(max_tokens, per_step, what=f"max_tokens={max_tokens}")
        if max_epochs is None:
            max_epochs = -1  # the token budget is the limit, not Lightning's 1000-epoch default
    if max_steps < -1 or max_steps == 0:
        raise ConfigError(f"max_steps={max_steps} must be -1 (no limit) or a positive int.")
    if max_epochs is None or max_epochs == -1:
        if max_steps == -1 and max_epochs is None:
            max_epochs = 1000  # Lightning's default when neither is set
        else:
            max_epochs = None
    elif max_epochs < 1:
        raise ConfigError(f"max_epochs={max_epochs} must be a positive int, or -1/None for no limit.")

    if dataset_size is not None:
        if batch_size is None:
            raise ConfigError("dataset_size was given without batch_size.")
        _check_positive("batch_size", batch_size)
        if dataset_size < 0:
            raise ConfigError(f"dataset_size={dataset_size} is negative.")
        batches_per_rank = per_rank_batches(dataset_size, batch_size, data_parallel_size, drop_last)

    global_batch = batch_size * accumulate_grad_batches * data_parallel_size if batch_size else None

    if batches_per_rank is None:
        if max_steps == -1:
            raise ConfigError(
                "the training data has no length (an IterableDataset), so the number of steps is unknown.",
                hint="set Trainer(max_steps=N); flashdist never guesses a schedule length.",
            )
        return StepPlan(
            data_parallel_size=data_parallel_size, accumulate_grad_batches=accumulate_grad_batches, max_epochs=max_epochs,
            max_steps=max_steps, micro_batches_per_epoch_per_rank=None, optimizer_steps_per_epoch=(), planned_total_steps=max_steps,
            global_batch_size=global_batch, fast_dev_run=fast_dev_run, tokens_per_sample=tokens_per_sample, max_tokens=max_tokens,
        )

    micro = limit_batches(batches_per_rank, limit_train_batches)
    if micro == 0 and limit_train_batches == 0:
        raise ConfigError(
            f"limit_train_batches={limit_train_batches!r} trains on no batch, so there is no schedule to plan.",
            hint="to only validate, call trainer.validate(model, dataloader); to train, set limit_train_batches > 0.",
        )
    if micro == 0:
        detail = (
            f"{dataset_size} samples over {data_parallel_size} data-parallel rank(s) with batch_size={batch_size}, drop_last={drop_last}"
            if dataset_size is not None
            else f"{batches_per_rank} batches per rank, limit_train_batches={limit_train_batches}"
        )
        raise ConfigError(
            f"each rank would get 0 training batches ({detail}).",
            hint="use more data, a smaller batch size, fewer ranks, drop_last=False, or a larger limit_train_batches.",
        )

    per_epoch = _steps_per_epoch(micro, accumulate_grad_batches, max_epochs, max_steps)
    return StepPlan(
        data_parallel_size=data_parallel_size, accumulate_grad_batches=accumulate_grad_batches, max_epochs=max_epochs,
        max_steps=max_steps, micro_batches_per_epoch_per_rank=micro, optimizer_steps_per_epoch=per_epoch,
        planned_total_steps=sum(per_epoch), global_batch_size=global_batch, fast_dev_run=fast_dev_run,
        tokens_per_sample=tokens_per_sample, max_tokens=max_tokens,
    )


def _steps_per_epoch(micro: int, accumulate: int, max_epochs: int | None, max_steps: int) -> tuple[int, ...]:
    """Optimizer steps in each epoch that runs: a step per full window and one on an epoch's partial window."""
    budget = max_steps if max_steps != -1 else math.inf
    in_epoch = math.ceil(micro / accumulate)  # micro >= 1 here, so every epoch makes progress
    steps: list[int] = []
    while (max_epochs is None or len(steps) < max_epochs) and sum(steps) < budget:
        steps.append(int(min(in_epoch, budget - sum(steps))))
    return tuple(steps)


def _check_positive(name: str, value: int) -> None:
    require_positive_int(value, f"{name}={value!r}")
