"""``bench schedulers`` on tensor LRs: what a schedule costs when a captured CUDA graph reads the LR.

A CUDA graph (``torch.cuda.graph``, or ``torch.compile(mode="reduce-overhead")``) replays the
kernels it captured with the addresses it captured: a float LR baked into the optimizer's step
at capture never changes, and a new tensor put in a param group is never read. The schedule must
write the new value *into the tensor the graph read*. That is what a Task sets up for a compiled
or capturable step (``lr_as_tensor``, :func:`flashdist.optim.compiled.tensor_lr_kwargs`), and what
this mode measures and checks, on the same builders and timing loop as the float-LR bench:

- the optimizer is AdamW over the groups' parameters on the device (``capturable=True`` on CUDA,
  the flag that lets its step take a tensor LR inside a graph), its LRs 0-dim tensors there;
- every scheduler is built through ``build_lr_scheduler(..., lr_as_tensor=True)``, then checked
  (:func:`lr_tensor_problem`): after a few steps each group's LR must be the same tensor object,
  holding the float-LR schedule's value (to float32 precision). A scheduler that fails is not timed;
- the optimizer's step is captured once in a CUDA graph (:func:`optimizer_step_replay`); one
  timed call is ``scheduler.step()`` then the graph's replay, and the baseline writes a
  hand-computed linear factor into the same kind of tensors (``lr.fill_(base * m)``) before its
  own replay. On the CPU (``--lr-as-tensor``) the same code runs with the eager step in place of
  the replay: everything but the capture.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

BASE_LR = 0.1
FLOAT32_TOLERANCE = 1e-5  # relative; float32's epsilon is 1.2e-7


def make_tensor_lr_optimizer(groups: int, device: str) -> torch.optim.Optimizer:
    """AdamW over ``groups`` one-element groups with distinct base LRs, gradients set, on ``device``.

    Example:
        >>> opt = make_tensor_lr_optimizer(2, "cpu"); [g["lr"] for g in opt.param_groups]
        [0.1, 0.15000000000000002]
    """
    params = [torch.nn.Parameter(torch.zeros(1, device=device)) for _ in range(groups)]
    for param in params:
        param.grad = torch.full_like(param, 1e-3)  # static gradients: the graph reads them where they are
    param_groups = [{"params": [p], "lr": BASE_LR * (1 + index / max(1, groups))} for index, p in enumerate(params)]
    # capturable: the step keeps its state on the device and takes a tensor LR inside a graph (CUDA only)
    return torch.optim.AdamW(param_groups, lr=BASE_LR, weight_decay=0.0, capturable=device == "cuda")


def optimizer_step_replay(optimizer: torch.optim.Optimizer, device: str) -> Callable[[], Any]:
    """The optimizer's step as a timed call runs it: on CUDA captured once in a graph (its replay), else the eager step.

    The capture follows torch's recipe: warm-up steps on a side stream (they allocate the state
    the graph then reads), then one step captured. Later LR changes reach the replay only
    through the tensors the capture read.
    """
    if device != "cuda":
        return optimizer.step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        optimizer.step()
    return graph.replay


def lr_tensor_problem(optimizer: torch.optim.Optimizer, scheduler: Any, reference: Any, steps: int = 5) -> str | None:
    """Why a captured graph would not see this schedule (None: it would).

    ``reference`` is the same scheduler built on float LRs. Both are stepped ``steps`` times; every
    group's LR must still be the tensor object it was (written in place) and equal the float
    schedule's value to float32 precision (``FLOAT32_TOLERANCE``).

    Example:
        >>> from flashdist.optim.build import build_lr_scheduler
        >>> spec = ("linear_schedule_with_warmup", {"num_warmup_steps": 2})
        >>> tensor_opt, float_opt = make_tensor_lr_optimizer(2, "cpu"), make_tensor_lr_optimizer(2, "cpu")
        >>> tensor_sched, _ = build_lr_scheduler(tensor_opt, spec, 10, lr_as_tensor=True)
        >>> lr_tensor_problem(tensor_opt, tensor_sched, build_lr_scheduler(float_opt, spec, 10)[0]) is None
        True
    """
    held = [group["lr"] for group in optimizer.param_groups]
    if not all(isinstance(lr, torch.Tensor) for lr in held):
        return "keeps its LRs as floats: a captured graph would read the LR of the capture for ever"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(1, steps + 1):
            scheduler.step()
            reference.step()
            now = [group["lr"] for group in optimizer.param_groups]
            if any(lr is not was for lr, was in zip(now, held)):
                return f"puts a new LR object in the param group at step {step}: a captured graph keeps reading the old tensor"
            expected = [float(g["lr"]) for g in reference.optimizer.param_groups]
            # float32 rounding, compounded by a chainable torch scheduler (lr *= gamma): a few ulps, not a wrong schedule
            if any(abs(float(lr) - e) > FLOAT32_TOLERANCE * abs(e) for lr, e in zip(now, expected)):
                return f"LR tensor {[float(lr) for lr in now]} at step {step}, the float schedule {expected}"
    return None


def direct_tensor_assignment(optimizer: torch.optim.Optimizer, lr_factor: Callable[[int], float]) -> Callable[[], None]:
    """The baseline on tensor LRs: ``m = lr_factor(step); for lr, b in pairs: lr.fill_(b * m)``."""
    pairs = tuple((group["lr"], float(group.get("initial_lr", group["lr"]))) for group in optimizer.param_groups)
    step = 0

    def direct_step() -> None:
        nonlocal step
        step += 1
        factor = lr_factor(step)
        for lr, base_lr in pairs:
            lr.fill_(base_lr * factor)

    return direct_step


def then(first: Callable[[], Any], second: Callable[[], Any]) -> Callable[[], None]:
    """One timed call: the LR write, then the (replayed) optimizer step."""

    def call() -> None:
        first()
        second()

    return call


def synchronized_timer(device: str, time_calls_us: Callable[..., float]) -> Callable[..., float]:
    """``time_calls_us`` with the device drained before and after the block (on CUDA the calls only queue kernels)."""
    if device != "cuda":
        return time_calls_us

    def timed(fn: Callable[[], Any], calls: int, clock: str = "wall") -> float:
        torch.cuda.synchronize()
        started = time.perf_counter_ns()
        time_calls_us(fn, calls, clock)
        torch.cuda.synchronize()
        return (time.perf_counter_ns() - started) / calls / 1e3

    return timed


def graph_method(device: str) -> str:
    replay = "the replay of the optimizer step captured once in a CUDA graph" if device == "cuda" else "the eager optimizer step"
    return (
        f" Tensor-LR mode ({device}): every optimizer is AdamW (capturable on cuda) over the groups' one-element "
        f"parameters, its LRs 0-dim tensors on the device; schedulers built with lr_as_tensor=True as a Task builds "
        f"them, refused untimed unless each LR stays the same tensor and equals the float schedule after 5 steps; one "
        f"call = step() (baseline: lr.fill_(base * m) per group) then {replay}; on cuda each block is bracketed by "
        f"torch.cuda.synchronize() and timed on the wall clock."
    )
