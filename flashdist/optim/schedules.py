"""Closed-form warmup schedules: pure ``step -> multiplier`` functions, validated once.

Each family is a frozen dataclass holding its (validated) parameters. ``multiplier_fn()``
compiles it into a plain closure whose constants live in closure cells, so the per-step
path is a few float operations and no attribute lookups. The arithmetic repeats the
transformers lambdas operation for operation (same order, same rounding), which is why
``flashdist.optim.fast`` matches ``hf:<name>`` bit for bit rather than merely closely.

What the closures leave out, they leave out because it cannot change a value: transformers'
``max(0, factor)`` where the factor is provably >= 0 (``0.5 * (1 + cos x)`` with a
non-negative scale and floor), and ``step - warmup + 1.0`` folded into ``step + (1.0 - warmup)``
(exact: integers below 2**53 are exact in floats). Each saves tens of ns on a path that costs
about 0.1 µs; the bit-identity tests in tests/optim/test_fast_schedules.py guard them.

Example:
    >>> f = LinearWithWarmup(num_warmup_steps=2, num_training_steps=10).multiplier_fn()
    >>> [f(step) for step in (0, 1, 2, 6, 10, 11)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from flashdist.errors import ConfigError

Multiplier = Callable[[int], float]
WsdShape = Literal["linear", "cosine", "1-sqrt"]
WSD_SHAPES: tuple[str, ...] = ("linear", "cosine", "1-sqrt")
_PI = math.pi
_cos = math.cos
_sqrt = math.sqrt


def check_steps(name: str, value: object, *, minimum: int = 0) -> int:
    """A step count: an int (not a bool) >= ``minimum``; anything else is a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name}={value!r} is not a step count.",
            accepted=f"an int >= {minimum}",
            hint="durations like 0.1, '2ep' or '500ba' are resolved by build_lr_scheduler / the Task, not here.",
        )
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}.", accepted=f"an int >= {minimum}")
    return value


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number within [low, high] (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not a finite number.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name}={value} is out of range.", accepted=f"a number in [{low}, {high}]")
    return value


def check_min_lr_rate(value: object) -> float:
    """The cosine floor as a fraction of the base LR: in [0, 1]. transformers accepts any number,
    but a floor below 0 or above the base LR is a mistake (often ``min_lr`` > ``lr``), and the
    range is what lets the fast path drop transformers' ``max(0, factor)``."""
    if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and not 0 <= value <= 1:
        raise ConfigError(
            f"min_lr_rate={value} is outside [0, 1] (it is min_lr / lr).",
            accepted="a fraction of the base LR in [0, 1], or min_lr <= lr",
            hint="e.g. min_lr_rate=0.1 ends the cosine at 10% of the base LR.",
        )
    return check_number("min_lr_rate", value)


def _check_warmup_fits(num_warmup_steps: int, num_training_steps: int) -> None:
    if num_warmup_steps > num_training_steps:
        raise ConfigError(
            f"num_warmup_steps={num_warmup_steps} exceeds num_training_steps={num_training_steps}.",
            hint="shorten the warmup, or train longer.",
        )


@dataclass(frozen=True)
class Constant:
    """``constant_schedule``: the optimizer's LR, unchanged."""

    def multiplier_fn(self) -> Multiplier:
        def multiplier(step: int) -> float:
            return 1.0  # a float: base_lr * 1.0 is the same LR as transformers' * 1, and cheaper

        return multiplier


@dataclass(frozen=True)
class ConstantWithWarmup:
    """``constant_schedule_with_warmup``: linear 0 → 1 over the warmup, then 1."""

    num_warmup_steps: int

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)

    def multiplier_fn(self) -> Multiplier:
        warmup_steps = self.num_warmup_steps
        warmup_den = float(max(1.0, warmup_steps))

        def multiplier(step: int) -> float:
            if step < warmup_steps:
                return step / warmup_den
            return 1.0

        return multiplier


@dataclass(frozen=True)
class LinearWithWarmup:
    """``linear_schedule_with_warmup``: warmup, then linear decay to 0 at ``num_training_steps``."""

    num_warmup_steps: int
    num_training_steps: int

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        check_steps("num_training_steps", self.num_training_steps, minimum=1)
        _check_warmup_fits(self.num_warmup_steps, self.num_training_steps)

    def multiplier_fn(self) -> Multiplier:
        warmup_steps, total_steps = self.num_warmup_steps, self.num_training_steps
        warmup_den = float(max(1, warmup_steps))
        decay_den = float(max(1, total_steps - warmup_steps))

        def multiplier(step: int) -> float:
            if step < warmup_steps:
                return step / warmup_den
            value = (total_steps - step) / decay_den
            return value if value > 0.0 else 0.0

        return multiplier


@dataclass(frozen=True)
class CosineWithWarmup:
    """``cosine_schedule_with_warmup`` and, with ``min_lr_rate``, ``cosine_with_min_lr_schedule_with_warmup``."""

    num_warmup_steps: int
    num_training_steps: int
    num_cycles: float = 0.5
    min_lr_rate: float = 0.0

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        check_steps("num_training_steps", self.num_training_steps, minimum=1)
        _check_warmup_fits(self.num_warmup_steps, self.num_training_steps)
        check_number("num_cycles", self.num_cycles)
        check_min_lr_rate(self.min_lr_rate)

    def multiplier_fn(self) -> Multiplier:
        warmup_steps = self.num_warmup_steps
        warmup_den = float(max(1, warmup_steps))
        decay_den = float(max(1, self.num_training_steps - warmup_steps))
        phase = _PI * float(self.num_cycles) * 2.0  # (pi * cycles * 2.0) * progress: transformers' order
        min_rate = self.min_lr_rate
        cos = _cos
        if min_rate == 0.0:  # transformers' "* (1 - 0) + 0" is exact: left out

            def multiplier(step: int) -> float:
                if step < warmup_steps:
                    return step / warmup_den
                return 0.5 * (1.0 + cos(phase * ((step - warmup_steps) / decay_den)))

            return multiplier
        keep = 1 - min_rate

        def multiplier_with_floor(step: int) -> float:
            if step < warmup_steps:
                return step / warmup_den
            return 0.5 * (1.0 + cos(phase * ((step - warmup_steps) / decay_den))) * keep + min_rate

        return multiplier_with_floor


@dataclass(frozen=True)
class CosineWithMinLrRate:
    """``cosine_with_min_lr_schedule_with_warmup_lr_rate``: its warmup starts above 0 and its
    decay is shifted one step earlier than ``CosineWithWarmup``'s, as transformers defines it."""

    num_warmup_steps: int
    num_training_steps: int
    num_cycles: float = 0.5
    min_lr_rate: float = 0.0
    warmup_lr_rate: float | None = None

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        check_steps("num_training_steps", self.num_training_steps, minimum=1)
        _check_warmup_fits(self.num_warmup_steps, self.num_training_steps)
        check_number("num_cycles", self.num_cycles)
        check_min_lr_rate(self.min_lr_rate)
        if self.warmup_lr_rate is not None:
            check_number("warmup_lr_rate", self.warmup_lr_rate)

    def multiplier_fn(self) -> Multiplier:
        warmup_end = self.num_warmup_steps  # compared as an int: the same answer, a cheaper compare
        warmup_steps = float(warmup_end)
        phase = _PI * self.num_cycles * 2.0
        decay_den = max(1.0, float(self.num_training_steps) - warmup_steps)
        keep, min_rate = 1 - self.min_lr_rate, self.min_lr_rate
        shift = 1.0 - warmup_steps  # step + shift == step - warmup_steps + 1.0, exactly
        cos = _cos
        if self.warmup_lr_rate is None:
            warmup_den = max(1.0, warmup_steps)

            def multiplier(step: int) -> float:
                if step < warmup_end:
                    return (step + 1.0) / warmup_den
                return 0.5 * (1.0 + cos(phase * ((step + shift) / decay_den))) * keep + min_rate

            return multiplier
        warmup_den = max(1, warmup_steps - 1)
        start, slope = float(self.warmup_lr_rate), 1.0 - float(self.warmup_lr_rate)

        def multiplier_from_rate(step: int) -> float:
            if step < warmup_end:
                return start + slope * step / warmup_den
            return 0.5 * (1.0 + cos(phase * ((step + shift) / decay_den))) * keep + min_rate

        return multiplier_from_rate


@dataclass(frozen=True)
class CosineWithHardRestarts:
    """``cosine_with_hard_restarts_schedule_with_warmup``: ``num_cycles`` cosine decays, each restarting at 1."""

    num_warmup_steps: int
    num_training_steps: int
    num_cycles: float = 1

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        check_steps("num_training_steps", self.num_training_steps, minimum=1)
        _check_warmup_fits(self.num_warmup_steps, self.num_training_steps)
        check_number("num_cycles", self.num_cycles)

    def multiplier_fn(self) -> Multiplier:
        warmup_steps = self.num_warmup_steps
        warmup_den = float(max(1, warmup_steps))
        decay_den = float(max(1, self.num_training_steps - warmup_steps))
        cycles = float(self.num_cycles)
        cos, pi = _cos, _PI

        def multiplier(step: int) -> float:
            if step < warmup_steps:
                return step / warmup_den
            progress = (step - warmup_steps) / decay_den
            if progress >= 1.0:
                return 0.0
            return 0.5 * (1.0 + cos(pi * ((cycles * progress) % 1.0)))  # >= 0: transformers' max(0.0, .) is a no-op

        return multiplier


@dataclass(frozen=True)
class PolynomialDecayWithWarmup:
    """``polynomial_decay_schedule_with_warmup``: warmup, then ``(lr_init - lr_end) * remaining**power + lr_end``.

    ``lr_init`` is the optimizer's default LR (``optimizer.defaults["lr"]``), as in transformers.
    """

    num_warmup_steps: int
    num_training_steps: int
    lr_init: float
    lr_end: float = 1e-7
    power: float = 1.0

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        check_steps("num_training_steps", self.num_training_steps, minimum=1)
        check_number("lr_end", self.lr_end)
        check_number("power", self.power)
        if self.num_warmup_steps >= self.num_training_steps:
            raise ConfigError(
                f"num_warmup_steps={self.num_warmup_steps} must be below num_training_steps={self.num_training_steps}.",
                hint="the decay needs at least one step (transformers divides by zero at the last step otherwise).",
            )
        if not self.lr_init > self.lr_end:
            raise ConfigError(
                f"lr_end={self.lr_end} must be smaller than the optimizer's lr={self.lr_init}.",
                hint="lower lr_end, or raise the learning rate.",
            )

    def multiplier_fn(self) -> Multiplier:
        warmup_steps, total_steps = self.num_warmup_steps, self.num_training_steps
        warmup_den = float(max(1, warmup_steps))
        lr_init, lr_end, power = self.lr_init, self.lr_end, self.power
        lr_range = lr_init - lr_end
        decay_steps = total_steps - warmup_steps
        final = lr_end / lr_init

        def multiplier(step: int) -> float:
            if step < warmup_steps:
                return step / warmup_den
            if step > total_steps:
                return final
            return (lr_range * (1.0 - (step - warmup_steps) / decay_steps) ** power + lr_end) / lr_init

        return multiplier


@dataclass(frozen=True)
class InverseSqrt:
    """``inverse_sqrt_schedule``: warmup, then ``1 / sqrt((step + timescale - warmup) / timescale)``."""

    num_warmup_steps: int
    timescale: int | None = None

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        if self.timescale is not None:
            check_steps("timescale", self.timescale, minimum=1)

    def multiplier_fn(self) -> Multiplier:
        warmup_steps = self.num_warmup_steps
        timescale = self.timescale if self.timescale is not None else (warmup_steps or 10_000)
        warmup_den = float(max(1, warmup_steps))
        shift = timescale - warmup_steps

        def multiplier(step: int) -> float:
            if step < warmup_steps:
                return step / warmup_den
            return 1.0 / _sqrt((step + shift) / timescale)

        return multiplier


@dataclass(frozen=True)
class WarmupStableDecay:
    """``wsd_schedule``: warmup (``warmup_type``), a stable plateau, a decay (``decay_type``),
    then ``min_lr_ratio``. Both shapes are chosen here, once, not compared per step."""

    num_warmup_steps: int
    num_stable_steps: int
    num_decay_steps: int
    warmup_type: WsdShape = "linear"
    decay_type: WsdShape = "cosine"
    min_lr_ratio: float = 0.0
    num_cycles: float = 0.5

    def __post_init__(self) -> None:
        check_steps("num_warmup_steps", self.num_warmup_steps)
        check_steps("num_decay_steps", self.num_decay_steps)
        if isinstance(self.num_stable_steps, int) and not isinstance(self.num_stable_steps, bool) and self.num_stable_steps < 0:
            raise ConfigError(
                f"num_warmup_steps + num_decay_steps exceed the training steps (stable phase {self.num_stable_steps} steps).",
                hint="shorten the warmup or the decay, or train longer.",
            )
        check_steps("num_stable_steps", self.num_stable_steps)
        for name in ("warmup_type", "decay_type"):
            if getattr(self, name) not in WSD_SHAPES:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not known.", accepted=WSD_SHAPES)
        check_number("min_lr_ratio", self.min_lr_ratio)
        check_number("num_cycles", self.num_cycles)

    def multiplier_fn(self) -> Multiplier:
        warmup_steps = self.num_warmup_steps
        decay_start = warmup_steps + self.num_stable_steps
        decay_end = decay_start + self.num_decay_steps
        warmup_den = float(max(1, warmup_steps))
        decay_den = float(max(1, self.num_decay_steps))
        min_ratio = self.min_lr_ratio
        keep = 1.0 - min_ratio
        phase = _PI * float(self.num_cycles) * 2.0
        warmup_shape = {
            "linear": lambda progress: progress,
            "cosine": lambda progress: 0.5 * (1.0 - _cos(_PI * progress)),
            "1-sqrt": lambda progress: 1.0 - _sqrt(1.0 - progress),
        }[self.warmup_type]
        decay_shape = {
            "linear": lambda progress: 1.0 - progress,
            "cosine": lambda progress: 0.5 * (1.0 + _cos(phase * progress)),
            "1-sqrt": lambda progress: 1.0 - _sqrt(progress),
        }[self.decay_type]

        def multiplier(step: int) -> float:
            if step < warmup_steps:
                value = warmup_shape(step / warmup_den) * keep + min_ratio
            elif step < decay_start:
                return 1.0
            elif step < decay_end:
                value = decay_shape((step - decay_start) / decay_den) * keep + min_ratio
            else:
                return min_ratio
            return value if value > 0.0 else 0.0

        return multiplier
