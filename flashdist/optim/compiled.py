"""A compiled optimizer step whose LR schedule never recompiles it.

``torch.compile`` guards on the Python floats a compiled function reads: a float LR that
changes every step makes the optimizer step recompile (pytorch#107076, #130467). Read as a
0-dim tensor instead, the LR is an input of the compiled graph; the schedule writes it in
place (``fill_``) and the graph stays valid. This module holds the two decisions (does this
optimizer want tensor LRs; which kwargs the scheduler gets) as pure functions, and the wrapper
that compiles only the update, never the closure (forward and backward stay eager, as
Lightning's precision plugins and hooks expect).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from flashdist.optim.fast import lr_to_tensors
from flashdist.registry import resolve_lazy


def wants_tensor_lr(optimizer: torch.optim.Optimizer, compiled_step: bool) -> bool:
    """Whether the LR should live in a tensor: a compiled step, a capturable optimizer, or a fused one off the CPU.

    On the CPU a fused kernel reads its LR on the host either way, so a tensor there would only
    round the LR to float32 (the ledger would then report 0.009999999776 for 0.01) for nothing.

    Example:
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3, fused=True)
        >>> wants_tensor_lr(opt, compiled_step=False), wants_tensor_lr(opt, compiled_step=True)
        (False, True)
    """
    defaults = optimizer.defaults
    if compiled_step or defaults.get("capturable"):
        return True
    on_cpu = all(p.device.type == "cpu" for group in optimizer.param_groups for p in group["params"])
    return bool(defaults.get("fused")) and not on_cpu


def takes_lr_as_tensor(target: Any) -> bool:
    """Whether a scheduler factory accepts ``lr_as_tensor`` (flashdist's closed-form fast path does)."""
    try:
        return "lr_as_tensor" in inspect.signature(resolve_lazy(target)).parameters
    except (TypeError, ValueError):  # no signature to read: assume not
        return False


def tensor_lr_kwargs(
    optimizer: torch.optim.Optimizer, target: Any, kwargs: Mapping[str, Any] | None, compiled_step: bool, name: str
) -> dict[str, Any] | None:
    """The scheduler kwargs for a fit that wants tensor LRs; turns the optimizer's LRs into tensors.

    A fast-path schedule gets ``lr_as_tensor=True`` unless the user chose otherwise; any other
    torch scheduler writes a tensor LR in place by itself (``fill_``), so turning the groups'
    LRs into tensors here serves it too. An explicit ``lr_as_tensor=False`` is kept, with a
    warning that a compiled step will then recompile.

    Example:
        >>> from flashdist.optim.fast import linear_schedule_with_warmup
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
        >>> tensor_lr_kwargs(opt, linear_schedule_with_warmup, {"num_warmup_steps": 1}, True, "linear")
        {'num_warmup_steps': 1, 'lr_as_tensor': True}
    """
    given = None if kwargs is None else dict(kwargs)
    if given is not None and given.get("lr_as_tensor") is False:
        if compiled_step:
            warnings.warn(
                f"lr_scheduler {name!r}: lr_as_tensor=False with compile_optimizer=True writes a new float LR every "
                "step, which recompiles the compiled optimizer step (pytorch#107076); drop lr_as_tensor=False to avoid it.",
                UserWarning,
                stacklevel=3,
            )
        return given
    lr_to_tensors(optimizer)
    if given is not None and target is not None and takes_lr_as_tensor(target):
        given["lr_as_tensor"] = True
    return given


class CompiledOptimizerStep:
    """``optimizer.step`` with the update under ``torch.compile`` and the closure run eagerly first.

    Installed on the optimizer instance (as torch's own LR schedulers wrap ``step``), after the
    scheduler is built, so the scheduler's call-order check still runs. Lightning calls
    ``optimizer.step(closure=...)`` through its precision plugin: the closure (forward,
    backward, hooks, clipping) runs here, outside the compiled graph.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1))
        >>> opt.step = CompiledOptimizerStep(opt, backend="eager")
        >>> model(torch.ones(1, 2)).sum().backward(); opt.step()
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **compile_kwargs: Any):
        eager_step: Callable[[], Any] = optimizer.step

        def update() -> None:
            eager_step()

        self.compile_kwargs = dict(compile_kwargs)
        self._update = torch.compile(update, **compile_kwargs)

    def __call__(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss


def compile_optimizer_step(optimizer: torch.optim.Optimizer, **compile_kwargs: Any) -> CompiledOptimizerStep:
    """Compile ``optimizer``'s update in place (build the LR scheduler first) and return the wrapper.

    Example:
        >>> opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=torch.tensor(1e-3))
        >>> type(compile_optimizer_step(opt, backend="eager")).__name__
        'CompiledOptimizerStep'
    """
    wrapper = CompiledOptimizerStep(optimizer, **compile_kwargs)
    optimizer.step = wrapper  # type: ignore[method-assign]
    return wrapper


def normalize_compile_option(value: Any) -> dict[str, Any] | None:
    """``compile_optimizer=`` as torch.compile kwargs: False/None -> None, True -> {}, a dict -> a checked copy.

    Example:
        >>> normalize_compile_option(True), normalize_compile_option({"backend": "eager"})
        ({}, {'backend': 'eager'})
    """
    from flashdist.errors import ConfigError

    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        accepted = [p for p in inspect.signature(torch.compile).parameters if p != "model"]
        unknown = sorted(set(value) - set(accepted))
        if unknown:
            raise ConfigError(f"compile_optimizer={dict(value)!r} has key(s) {unknown} torch.compile does not take.",
                              accepted=accepted, hint="e.g. compile_optimizer={'backend': 'inductor', 'fullgraph': False}.")
        return dict(value)
    raise ConfigError(f"compile_optimizer={value!r} has type {type(value).__name__}.",
                      accepted="True, False, or a dict of torch.compile kwargs", hint="e.g. compile_optimizer=True.")
