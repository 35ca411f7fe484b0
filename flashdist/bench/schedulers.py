"""``flashdist bench schedulers``: the cost of one ``scheduler.step()``, for every registered scheduler.

Method (also written into the JSON): for each param-group count, every scheduler that builds
with the kwargs in :data:`BENCH_KWARGS` gets its own SGD optimizer with that many groups
(base LRs differ per group) and is built through :func:`flashdist.optim.build_lr_scheduler`,
exactly as a Task builds it. Each is stepped ``warmup_steps`` times untimed, then ``repeats``
rounds follow; in each round every candidate, in a freshly shuffled order, is timed over
``steps`` back-to-back ``step()`` calls with the garbage collector off, next to a block of
the baseline (in a random order within the pair). A candidate's figure is the median of its
per-round µs/step, its spread the interquartile range across rounds; its ratio is the median
over rounds of candidate ÷ the adjacent baseline block, with a bootstrap 95% CI. The
baseline is direct assignment at its tightest: a plain function computing a linear
warmup/decay factor once per step, written into each group over pairs built in advance
(``m = f(step); for g, b in pairs: g["lr"] = b * m``), called the same way. No scheduler can
do less work than that per step. A fast-path candidate is also timed against direct
assignment of its own schedule (the same loop with that schedule's ``f``, in the same
block): a cosine costs more than a linear ramp to compute, by hand or not, and this second
ratio is what the scheduler machinery adds.
"""

from __future__ import annotations

import random
import warnings
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from flashdist.bench.baselines import direct_assignment, direct_assignment_of, linear_lr_factor, make_optimizer
from flashdist.bench.device import check_device, device_name
from flashdist.bench.graphed import (
    direct_tensor_assignment,
    graph_method,
    lr_tensor_problem,
    make_tensor_lr_optimizer,
    optimizer_step_replay,
    synchronized_timer,
    then,
)
from flashdist.bench.stats import bootstrap_ci, environment, iqr, median, time_calls_us
from flashdist.bench.user_specs import UserSchedulerSpec
from flashdist.errors import ConfigError
from flashdist.optim.build import check_scheduler_api
from flashdist.optim.fast import ClosedFormLR, lr_to_tensors

Implementation = str  # "flashdist" | "transformers" | "torch" | "deepspeed"


def _unit_factor(step: int) -> float:
    """A schedule that keeps the LR (for LambdaLR / MultiplicativeLR: their cost is the machinery)."""
    return 1.0


# Sensible kwargs for names that need some; the plan fills totals and resolves durations.
BENCH_KWARGS: dict[str, dict[str, Any]] = {
    "lambdalr": {"lr_lambda": _unit_factor},
    "multiplicativelr": {"lr_lambda": _unit_factor},
    "steplr": {"step_size": 1000},
    "multisteplr": {"milestones": [1000, 2000]},
    "exponentiallr": {"gamma": 0.9999},
    "cosineannealinglr": {"T_max": 1000},
    "cosineannealingwarmrestarts": {"T_0": 1000},
    "sequentiallr": {"schedulers": [("linearlr", {}), ("exponentiallr", {"gamma": 0.9999})], "milestones": [5]},
    "chainedscheduler": {"schedulers": [("steplr", {"step_size": 1000}), ("exponentiallr", {"gamma": 0.9999})]},
    "constant_schedule_with_warmup": {"num_warmup_steps": 0.1},
    "linear_schedule_with_warmup": {"num_warmup_steps": 0.1},
    "cosine_schedule_with_warmup": {"num_warmup_steps": 0.1},
    "cosine_with_hard_restarts_schedule_with_warmup": {"num_warmup_steps": 0.1, "num_cycles": 3},
    "polynomial_decay_schedule_with_warmup": {"num_warmup_steps": 0.1, "power": 2.0},
    "inverse_sqrt_schedule": {"num_warmup_steps": 0.1},
    "cosine_with_min_lr_schedule_with_warmup": {"num_warmup_steps": 0.1, "min_lr_rate": 0.1},
    "cosine_with_min_lr_schedule_with_warmup_lr_rate": {"num_warmup_steps": 0.1, "min_lr_rate": 0.1},
    "wsd_schedule": {"num_warmup_steps": 0.1, "num_decay_steps": 0.2},
    "warmupdecaylr": {"warmup_num_steps": 0.1},
    "warmupcosinelr": {"warmup_num_steps": 0.1},
    "warmuplr": {"warmup_num_steps": 0.1},
}

# Names not timed, and why (a reason a reader can check).
SKIP_REASONS: dict[str, str] = {
    "reducelronplateau": "steps on a monitored metric once per validation, not per optimizer step",
    "reduce_on_plateau_schedule": "steps on a monitored metric once per validation, not per optimizer step",
    "greedy_schedule": "steps on a monitored metric once per validation, not per optimizer step",
    "adafactor_schedule": "a read-out of transformers' Adafactor's internal LR; meaningless without that optimizer",
}


@dataclass(frozen=True)
class Candidate:
    """One thing timed: a registry name, who implements it, and its zero-argument step."""

    scheduler: str
    implementation: Implementation
    step: Callable[[], Any]
    # For the fast path: direct assignment of the same schedule, the same arithmetic called as
    # a plain function (what writing the loop by hand for this schedule would cost).
    same_schedule_direct: Callable[[], Any] | None = None


def bench_kwargs(name: str) -> dict[str, Any]:
    """The kwargs the bench builds ``name`` with (``hf:<name>`` shares its plain name's)."""
    key = name.lower().removeprefix("hf:")
    return dict(BENCH_KWARGS.get(key, {}))


def scheduler_names(include: Iterable[str] | None = None) -> list[tuple[str, Any]]:
    """(name, entry) for every registered scheduler: the global registry, then recipes on Task classes."""
    from flashdist.optim import LR_SCHEDULERS

    found = [(name, LR_SCHEDULERS.get(name)) for name in LR_SCHEDULERS.names()]
    for registry in _recipe_registries():
        found += [(name, registry.get(name)) for name in registry.names() if registry.get(name).is_recipe]
    if include is not None:
        wanted = {name.lower() for name in include}
        found = [(name, entry) for name, entry in found if name.lower() in wanted]
    seen: set[str] = set()
    return [(n, e) for n, e in found if not (n in seen or seen.add(n))]


def check_known(include: Iterable[str]) -> None:
    """Refuse an ``--only`` name that is neither registered nor a recipe, with the close matches.

    Example:
        >>> check_known(["steplr", "StepLR"])  # known (any case): nothing raised
    """
    import difflib

    known = [name.lower() for name, _ in scheduler_names()]
    unknown = [name for name in include if name.lower() not in known]
    if not unknown:
        return
    guesses = []
    for name in unknown:
        close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
        guesses.append(f"{name!r}: did you mean {' or '.join(map(repr, close))}?" if close else f"{name!r}: no close match.")
    raise ConfigError(
        f"--only names unknown scheduler(s) {unknown}.",
        hint=f"{' '.join(guesses)} Every name: Task.available_lr_schedulers(); a recipe's module goes in --import.",
    )


def _recipe_registries() -> list[Any]:
    """The recipe registries of every Task subclass imported so far (recipes live per class)."""
    try:
        from flashdist.tasks.model import Task
    except Exception:  # the core (Lightning) unavailable: no recipes to time
        return []
    classes, stack = [], [Task]
    while stack:
        cls = stack.pop()
        classes.append(cls)
        stack.extend(cls.__subclasses__())
    return [cls.lr_schedulers for cls in classes]


def build_candidate(name: str, entry: Any, groups: int, total_steps: int, device: str | None = None) -> Candidate:
    """Build ``name`` on a fresh optimizer through the same builder a Task uses (``device``: on tensor LRs there)."""
    from flashdist.optim.build import build_lr_scheduler

    def build(optimizer: torch.optim.Optimizer, lr_as_tensor: bool = False) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if entry.is_recipe:
                if lr_as_tensor:
                    lr_to_tensors(optimizer)
                return _recipe_scheduler(entry.target(optimizer))
            return build_lr_scheduler(optimizer, (name, bench_kwargs(name)), total_steps, lr_as_tensor=lr_as_tensor)[0]

    return _candidate(name, entry, build, groups, device)


def _candidate(label: str, entry: Any, build: Callable[..., Any], groups: int, device: str | None) -> Candidate:
    """The timed call of a scheduler ``build(optimizer, lr_as_tensor)`` makes: ``step()`` on float LRs, or on
    ``device``'s tensor LRs ``step()`` then the captured optimizer step (:mod:`flashdist.bench.graphed`)."""
    if device is None:
        optimizer = make_optimizer(groups)
        scheduler = build(optimizer)
        optimizer.step()  # once, so torch's "step() before optimizer.step()" warning path is not what we time
        same_schedule = None
        if isinstance(scheduler, ClosedFormLR):
            same_schedule = direct_assignment_of(scheduler.schedule.multiplier_fn(), make_optimizer(groups))
        return Candidate(label, implementation_of(entry, scheduler), scheduler.step, same_schedule)
    optimizer = make_tensor_lr_optimizer(groups, device)
    scheduler = build(optimizer, True)
    problem = lr_tensor_problem(optimizer, scheduler, build(make_tensor_lr_optimizer(groups, "cpu")))
    if problem is not None:
        raise NotTimed(f"not graph-safe: {problem}")
    same_schedule = None
    if isinstance(scheduler, ClosedFormLR):
        own = make_tensor_lr_optimizer(groups, device)
        lr_to_tensors(own)
        same_schedule = then(direct_tensor_assignment(own, scheduler.schedule.multiplier_fn()), optimizer_step_replay(own, device))
    return Candidate(label, implementation_of(entry, scheduler), then(scheduler.step, optimizer_step_replay(optimizer, device)),
                     same_schedule)


class NotTimed(Exception):
    """A candidate that cannot be timed per step, with the reason."""


def _recipe_scheduler(built: Any) -> Any:
    """What a recipe returned (a scheduler or a Lightning scheduler config) as a scheduler to time."""
    config = built if isinstance(built, Mapping) else {}
    scheduler = config.get("scheduler", built)
    if config.get("reduce_on_plateau") or _step_needs_an_argument(scheduler):
        raise NotTimed(SKIP_REASONS["reducelronplateau"])
    try:
        check_scheduler_api(scheduler, config)
    except ConfigError as error:  # no Task could use it either
        raise NotTimed(f"not an LR scheduler, refused at Task construction: {str(error).split(' HINT:')[0]}") from None
    return scheduler


def _step_needs_an_argument(scheduler: Any) -> bool:
    try:
        params = inspect.signature(scheduler.step).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def implementation_of(entry: Any, scheduler: Any) -> Implementation:
    if entry is not None and entry.provider in ("flashdist", "transformers", "torch", "deepspeed"):
        return entry.provider
    module = type(scheduler).__module__.split(".")[0]  # a recipe or a callable: who implements what it returned
    return module if module in ("flashdist", "transformers", "deepspeed", "torch") else "user"


def build_user_candidate(user: UserSchedulerSpec, groups: int, total_steps: int, device: str | None = None) -> Candidate:
    """Build one ``--scheduler`` spec as a Task would; any failure is a ConfigError naming the spec."""
    from flashdist.optim.build import build_lr_scheduler
    from flashdist.optim.specs import normalize_scheduler

    reason = SKIP_REASONS.get(user.label.lower().removeprefix("hf:")) if user.uses_bench_kwargs else None
    if reason is not None:
        raise ConfigError(f"--scheduler {user.label!r} is not timed per step: it {reason}.")
    try:
        if user.uses_bench_kwargs:  # a bare name: built as in the full run, with the bench's kwargs
            ((name, entry),) = scheduler_names([user.spec])
            return replace(build_candidate(name, entry, groups, total_steps, device), scheduler=user.label)
        spec = normalize_scheduler(user.spec)

        def build(optimizer: torch.optim.Optimizer, lr_as_tensor: bool = False) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scheduler, _ = build_lr_scheduler(optimizer, spec, total_steps, lr_as_tensor=lr_as_tensor)
                optimizer.step()  # as in build_candidate: torch's order-warning path is not what we time
                scheduler.step()  # one untimed step: a scheduler that cannot step per batch fails here, not mid-run
            return scheduler

        return _candidate(user.label, spec.entry, build, groups, device)
    except (ConfigError, NotTimed):
        raise
    except Exception as error:  # the library's own message is the most precise one
        raise ConfigError(f"--scheduler {user.label!r} failed to build: {type(error).__name__}: {error}",
                          hint="it must build like Task(lr_scheduler=...) on an SGD optimizer.") from error


def run(
    groups: Iterable[int] = (1, 4, 64),
    steps: int = 2000,
    repeats: int = 15,
    warmup_steps: int = 500,
    include: Iterable[str] | None = None,
    seed: int = 0,
    clock: str = "wall",
    progress: Callable[[str], None] | None = None,
    specs: Iterable[UserSchedulerSpec] | None = None,
    device: str = "cpu",
    lr_as_tensor: bool = False,
) -> dict[str, Any]:
    """Time every buildable scheduler, or only ``specs``; return the JSON-ready result (see the module docstring).

    ``specs`` (from :func:`flashdist.bench.user_specs.parse_scheduler_arg`) are what a user
    brings: each is built once before any timing (a failure is a ConfigError then), and is
    timed against the same baselines as the registry's schedulers.

    ``device="cuda"`` (or ``lr_as_tensor=True`` on the CPU): the LRs are tensors a captured CUDA
    graph reads, and one timed call is ``step()`` then the optimizer step's replay
    (:mod:`flashdist.bench.graphed`); a device this machine lacks is a ConfigError first.

    Example:
        >>> result = run(groups=(1,), steps=10, repeats=2, warmup_steps=2, include=["steplr"])
        >>> sorted(result)
        ['baseline_us_per_step', 'environment', 'lr', 'method', 'results', 'skipped']
    """
    groups = tuple(int(g) for g in groups)
    device = check_device(device)
    on_device = device if (lr_as_tensor or device == "cuda") else None  # None: float LRs, the step alone
    timer = synchronized_timer(device, time_calls_us)
    env_before = {**environment(), "device": device_name(device)}
    # Long enough that no schedule runs past its end (OneCycleLR refuses to), with a 10% warmup.
    total_steps = warmup_steps + steps * repeats + 10
    specs = list(specs or [])
    names = [] if specs else scheduler_names(include)
    for user in specs:  # every user spec builds before anything is timed
        build_user_candidate(user, groups[0], total_steps, on_device)
    skipped: dict[str, str] = {}
    baseline: dict[str, float] = {}
    results: list[dict[str, Any]] = []
    rng = random.Random(seed)
    for group_count in groups:
        candidates: list[Candidate] = []
        for name, entry in names:
            reason = SKIP_REASONS.get(name.lower().removeprefix("hf:"))
            if reason is not None:
                skipped[name] = reason
                continue
            try:
                candidates.append(build_candidate(name, entry, group_count, total_steps, on_device))
            except NotTimed as reason:
                skipped[name] = str(reason)
            except Exception as error:  # a scheduler that cannot be built here is reported, not fatal
                skipped[name] = f"failed to build: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        for user in specs:
            try:
                candidates.append(build_user_candidate(user, group_count, total_steps, on_device))
            except NotTimed as reason:
                skipped[user.label] = str(reason)
        # The baseline runs one block per candidate per round: its schedule spans all of them
        # (10% warmup, then decay), so it never runs past its end while timed.
        direct_total = warmup_steps + steps * repeats * max(1, len(candidates)) + 10
        if on_device is None:
            direct_step = direct_assignment(make_optimizer(group_count), direct_total, max(1, direct_total // 10))
        else:  # the same factor written into tensor LRs, then its own (replayed) optimizer step
            own = make_tensor_lr_optimizer(group_count, on_device)
            lr_to_tensors(own)
            direct_step = then(direct_tensor_assignment(own, linear_lr_factor(direct_total, max(1, direct_total // 10))),
                               optimizer_step_replay(own, on_device))
        direct = Candidate("direct assignment", "baseline", direct_step)
        steps_timed = [direct.step] + [fn for c in candidates for fn in (c.step, c.same_schedule_direct) if fn]
        for step_fn in steps_timed:
            timer(step_fn, warmup_steps, clock)
        samples: dict[int, list[float]] = {id(fn): [] for fn in steps_timed}
        ratios: dict[int, list[float]] = {id(c): [] for c in candidates}
        same_ratios: dict[int, list[float]] = {id(c): [] for c in candidates}
        for round_index in range(repeats):
            order = list(candidates)
            rng.shuffle(order)
            for candidate in order:
                # Each candidate block is timed right next to a baseline block (in a random
                # order): the machine's speed drifts between blocks on a shared host, and
                # adjacent blocks see the same speed.
                block = [fn for fn in (direct.step, candidate.step, candidate.same_schedule_direct) if fn]
                rng.shuffle(block)
                timings = {id(fn): timer(fn, steps, clock) for fn in block}
                for fn in block:
                    samples[id(fn)].append(timings[id(fn)])
                ratios[id(candidate)].append(timings[id(candidate.step)] / timings[id(direct.step)])
                if candidate.same_schedule_direct:
                    same_ratios[id(candidate)].append(timings[id(candidate.step)] / timings[id(candidate.same_schedule_direct)])
            if progress:
                progress(f"groups={group_count}: round {round_index + 1}/{repeats} done")
        baseline[str(group_count)] = median(samples[id(direct.step)])
        for candidate in candidates:
            row = {
                "scheduler": candidate.scheduler,
                "implementation": candidate.implementation,
                "groups": group_count,
                "us_per_step": median(samples[id(candidate.step)]),
                "spread": iqr(samples[id(candidate.step)]),
                "ratio_to_direct": median(ratios[id(candidate)]),
                "ratio_ci95": list(bootstrap_ci(ratios[id(candidate)])),
            }
            if candidate.same_schedule_direct:
                row["same_schedule_direct_us_per_step"] = median(samples[id(candidate.same_schedule_direct)])
                row["ratio_to_same_schedule_direct"] = median(same_ratios[id(candidate)])
                row["ratio_to_same_schedule_direct_ci95"] = list(bootstrap_ci(same_ratios[id(candidate)]))
            results.append(row)
    env = {**env_before, "load_average_after": environment()["load_average_1_5_15min"]}
    return {
        "method": method_text(steps, repeats, warmup_steps, clock) + (graph_method(device) if on_device else ""),
        "lr": "float" if on_device is None else ("tensor, CUDA graph" if on_device == "cuda" else "tensor, eager step"),
        "environment": env,
        "baseline_us_per_step": baseline,
        "results": results,
        "skipped": [{"scheduler": name, "reason": reason} for name, reason in skipped.items()],
    }


def method_text(steps: int, repeats: int, warmup_steps: int, clock: str) -> str:
    clock_text = "time.perf_counter_ns (wall)" if clock == "wall" else "time.thread_time_ns (this thread's CPU time)"
    return (
        f"Per param-group count: each scheduler built via build_lr_scheduler on its own SGD optimizer "
        f"(distinct base LRs per group), {warmup_steps} untimed warm-up steps, then {repeats} rounds; in each "
        f"round every candidate, in a shuffled order, is timed over {steps} back-to-back step() calls with "
        f"gc disabled, clock {clock_text}, paired with a block of the baseline timed right before or after it "
        f"(random order). us_per_step = median over rounds; spread = interquartile range over rounds (us). "
        f"Baseline 'direct assignment': a plain linear warmup/decay factor m = f(step) computed once, then "
        f"`for g, b in pairs: g['lr'] = b * m` over (group, base_lr) pairs built in advance; "
        f"baseline_us_per_step = median of all its blocks. ratio_to_direct = median over rounds of "
        f"(candidate block / its paired baseline block), ratio_ci95 = percentile-bootstrap 95% CI of that median. "
        f"Fast-path rows also: ratio_to_same_schedule_direct, the same against direct assignment of the same "
        f"schedule (its own f, the same loop), timed in the same block."
    )
