"""``flashdist bench compile``: a compiled optimizer step (tensor LR) against the eager one, and recompiles.

Method (also written into the JSON): per workload (the parameters of the bench's MLP and tiny
GPT-2, fixed gradients), two AdamW optimizers with the same fast linear-warmup schedule:
``eager`` (float LR, ``optimizer.step()`` as is) and ``compiled`` (what
``Trainer(compile_optimizer=True)`` installs: the LR a 0-dim tensor the schedule fills in
place, the update under ``torch.compile``). One timed call is ``optimizer.step()`` then
``scheduler.step()``. Each is warmed up (the compile happens there), then ``repeats`` rounds
time a block of ``steps`` calls of each, adjacent, in a shuffled order, gc off; the figure is
the median over rounds and the ratio compiled ÷ eager the median of the per-round ratios with a
bootstrap 95% CI. Frame compiles are counted (dynamo's counter) over every timed block. Last,
the contrast: a compiled step reading a float LR that the schedule rewrites every step, its
compiles counted over ``float_steps`` steps.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from flashdist.bench.device import check_device
from flashdist.bench.stats import bootstrap_ci, environment, median, time_calls_us
from flashdist.bench.workloads import LEARNING_RATE, workload
from flashdist.compat.torch import dynamo_frame_compiles, dynamo_recompile_limit
from flashdist.optim.compiled import compile_optimizer_step
from flashdist.optim.fast import linear_schedule_with_warmup


def make_step(name: str, variant: str, total_steps: int, compile_kwargs: dict[str, Any], device: str = "cpu") -> Callable[[], None]:
    """One optimizer update and one scheduler step on ``name``'s parameters, eager or compiled."""
    torch.manual_seed(0)
    params = [p for p in workload(name).model().to(device).parameters()]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    tensor_lr = variant == "compiled"
    scheduler = linear_schedule_with_warmup(optimizer, total_steps // 10, total_steps, lr_as_tensor=tensor_lr)
    if variant != "eager":
        compile_optimizer_step(optimizer, **compile_kwargs)
    step_optimizer, step_scheduler = optimizer.step, scheduler.step

    def step() -> None:
        step_optimizer()
        step_scheduler()

    return step


def run(
    workloads: Iterable[str] = ("mlp", "gpt2"),
    steps: int = 200,
    repeats: int = 15,
    warmup_steps: int = 20,
    float_steps: int = 20,
    backend: str = "inductor",
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time compiled against eager optimizer steps; return the JSON-ready result.

    Example:
        >>> result = run(workloads=["mlp"], steps=5, repeats=2, warmup_steps=2, float_steps=3, backend="eager")  # doctest: +SKIP
        >>> result["results"][0]["recompiles_while_timed"]  # doctest: +SKIP
        0
    """
    device = check_device(device)  # before anything compiles
    env = environment()
    torch.compiler.reset()
    compile_kwargs = {"backend": backend}
    total_steps = warmup_steps + 2 * steps * repeats + 10
    rng = random.Random(seed)
    results = []
    for name in workloads:
        variants = {v: make_step(name, v, total_steps, compile_kwargs, device) for v in ("eager", "compiled")}
        before_warmup = dynamo_frame_compiles()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fn in variants.values():
                time_calls_us(fn, warmup_steps)
        compiles_in_warmup = dynamo_frame_compiles() - before_warmup
        samples: dict[str, list[float]] = {v: [] for v in variants}
        ratios: list[float] = []
        recompiles = 0
        for round_index in range(repeats):
            order = list(variants)
            rng.shuffle(order)
            before = dynamo_frame_compiles()
            timings = {v: _timed_us(variants[v], steps, device) for v in order}
            recompiles += dynamo_frame_compiles() - before
            for v, us in timings.items():
                samples[v].append(us)
            ratios.append(timings["compiled"] / timings["eager"])
            if progress:
                progress(f"bench compile {name}: round {round_index + 1}/{repeats} done")
        results.append({
            "workload": name,
            "parameters": sum(p.numel() for p in workload(name).model().parameters()),
            "eager_us_per_step": median(samples["eager"]),
            "compiled_us_per_step": median(samples["compiled"]),
            "ratio_compiled_to_eager": median(ratios),
            "ratio_ci95": list(bootstrap_ci(ratios)),
            "compiles_in_warmup": compiles_in_warmup,
            "recompiles_while_timed": recompiles,
            "steps_timed_per_variant": steps * repeats,
        })
    # From a clean slate, as in a fresh process: what dynamo learned about the frames above
    # (automatic dynamic marks an input that changed between compiles) must not shape this count.
    torch.compiler.reset()
    float_fn = make_step(next(iter(workloads)), "compiled_float_lr", float_steps + 10, compile_kwargs, device)
    before = dynamo_frame_compiles()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = []
        for _ in range(float_steps):
            float_fn()
            counts.append(dynamo_frame_compiles() - before)
    contrast = {
        "workload": next(iter(workloads)),
        "steps": float_steps,
        "frame_compiles": counts[-1],
        "frame_compiles_after_each_step": counts,
        "recompile_limit": dynamo_recompile_limit(),
    }
    torch.compiler.reset()
    env["load_average_after"] = environment()["load_average_1_5_15min"]
    env["device"] = device
    return {"method": method_text(steps, repeats, warmup_steps, backend), "environment": env, "results": results,
            "float_lr_contrast": contrast}


def _timed_us(fn: Callable[[], None], steps: int, device: str) -> float:
    if device.startswith("cuda"):  # the kernels run asynchronously: time what the device did
        return _cuda_timed_us(fn, steps)
    return time_calls_us(fn, steps)


def _cuda_timed_us(fn: Callable[[], None], steps: int) -> float:
    import time

    torch.cuda.synchronize()
    start = time.perf_counter_ns()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter_ns() - start) / steps / 1e3


def method_text(steps: int, repeats: int, warmup_steps: int, backend: str) -> str:
    return (
        f"AdamW (lr {LEARNING_RATE}) over the parameters of each workload's model, gradients fixed, fast linear warmup "
        f"schedule; one call = optimizer.step() + scheduler.step(). eager: float LR. compiled: torch.compile(backend="
        f"{backend!r}) of the update, LR a 0-dim tensor filled in place (Trainer(compile_optimizer=True)). {warmup_steps} "
        f"untimed calls each (the compile), then {repeats} rounds, each timing {steps} back-to-back calls of both, "
        f"shuffled, gc off, wall clock, 1 torch thread. Figures: medians over rounds; ratio = median of per-round "
        f"compiled/eager, 95% percentile-bootstrap CI. Frame compiles counted by dynamo's frames counter "
        f"(flashdist.compat.torch). Contrast: a compiled step whose float LR the schedule rewrites every step."
    )


def print_table(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="optimizer.step() + scheduler.step(): compiled (tensor LR) vs eager, µs per step")
    for column in ("workload", "params", "eager µs", "compiled µs", "compiled ÷ eager [95% CI]", "compiles (warm-up)",
                   "recompiles (timed)"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for row in result["results"]:
        low, high = row["ratio_ci95"]
        table.add_row(row["workload"], f"{row['parameters']:,}", f"{row['eager_us_per_step']:.1f}",
                      f"{row['compiled_us_per_step']:.1f}", f"{row['ratio_compiled_to_eager']:.2f} [{low:.2f}, {high:.2f}]",
                      str(row["compiles_in_warmup"]), f"{row['recompiles_while_timed']} in {row['steps_timed_per_variant']} steps")
    console.print(table)
    contrast = result["float_lr_contrast"]
    console.print(f"float LR contrast ({contrast['workload']}): {contrast['frame_compiles']} frame compiles in "
                  f"{contrast['steps']} steps (after each step: {contrast['frame_compiles_after_each_step']}); "
                  f"dynamo's recompile_limit is {contrast['recompile_limit']}, past which that frame runs eagerly")
    console.print(f"[dim]method: {result['method']}[/dim]")
    console.print(f"[dim]environment: {result['environment']}[/dim]")
