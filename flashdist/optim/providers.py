"""Optimizers from optional packages, and from third-party packages' entry points.

Each provider is listed by ``Task.available_optimizers()`` only when its package is installed.
Installed means found by ``importlib.util.find_spec``, without importing it: bitsandbytes and
torchao take seconds to import. Building one (the Task's dry build at construction included)
imports it, so a broken install is a ``ConfigError`` at construction. A name of a provider that
is not installed is refused with the package to install.

- ``torch_optimizer``: Flash's names (``"Yogi"``, ``"AdaBelief"``, ...). Where torch has the same
  name (``RAdam``, ``Adafactor``), torch's keeps it, as in Flash; torch_optimizer's is
  ``"torch_optimizer:RAdam"``.
- ``schedulefree``: ``AdamWScheduleFree``, ``RAdamScheduleFree``, ``SGDScheduleFree``. The Task
  calls their ``train()`` / ``eval()`` at every train/eval switch.
- ``bitsandbytes``: ``"bnb:AdamW8bit"``, ``"bnb:PagedAdamW8bit"``, ... (prefixed: torchao has the
  same class names). Refused on a device its installed backend does not serve.
- ``torchao``: ``"torchao:AdamW8bit"``, ``"torchao:AdamW4bit"``, ``"torchao:AdamWFp8"``, ...

Third-party packages add entries through the entry-point groups ``flashdist.optimizers`` and
``flashdist.lr_schedulers``: the entry point names an ``OptimizerEntry`` / ``SchedulerEntry``, an
iterable of them, or a function returning either (see README, "Third-party optimizers").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flashdist.optim.entries import OptimizerEntry
from flashdist.registry import normalize_name, resolve_lazy

ENTRY_POINT_GROUPS = {"optimizer": "flashdist.optimizers", "lr_scheduler": "flashdist.lr_schedulers"}

# DeepSpeed's ZeRO optimizer steps its own fp32 copy of the weights and copies it into the model
# after each step: a train()/eval() switch on that copy would not reach the weights validation uses.
_NO_DEEPSPEED_MODE_SWITCH = (
    "deepspeed",
    "schedule-free optimizers switch the weights at train()/eval(), but under DeepSpeed the optimizer holds "
    "ZeRO's fp32 copy of them, which reaches the model only at the next step; use strategy='ddp' or 'fsdp'",
)


# Measured: a 2-process FSDP2 fit with bnb:AdamW8bit stops at its first step with
# "Operator bitsandbytes.optimizer_update_32bit.default does not have a sharding strategy registered".
_NO_FSDP2_DTENSORS = (
    "fsdp",
    "bitsandbytes' optimizer kernels take plain tensors, and FSDP2's parameters are DTensors (bitsandbytes "
    "registers no DTensor sharding for its ops); use strategy='ddp' or a 'deepspeed_*' strategy",
)


@dataclass(frozen=True)
class Provider:
    """The optimizers one optional package provides, as lazy ``"module:Class"`` entries."""

    module: str  # the import name, found without importing it
    pip_name: str
    entries: tuple[OptimizerEntry, ...]
    note: str = ""

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


def _entries(provider: str, module: str, classes: Iterable[str], prefix: str = "", taken: frozenset[str] = frozenset(),
             **flags: Any) -> tuple[OptimizerEntry, ...]:
    out = []
    for cls in classes:
        name = f"{provider}:{cls}" if normalize_name(cls) in taken else f"{prefix}{cls}"
        out.append(OptimizerEntry(name, f"{module}:{cls}", provider, **flags))  # type: ignore[arg-type]
    return tuple(out)


# torch_optimizer 0.3's optimizers (its __all__), less Lookahead (it wraps another optimizer, it
# does not take the parameters) and Adahessian (its step needs backward(create_graph=True),
# which Lightning's loop does not do).
TORCH_OPTIMIZER_CLASSES = (
    "A2GradExp", "A2GradInc", "A2GradUni", "AccSGD", "AdaBelief", "AdaBound", "AdaMod", "Adafactor", "AdamP", "AggMo",
    "Apollo", "DiffGrad", "LARS", "Lamb", "MADGRAD", "NovoGrad", "PID", "QHAdam", "QHM", "RAdam", "Ranger", "RangerQH",
    "RangerVA", "SGDP", "SGDW", "SWATS", "Shampoo", "Yogi",
)  # fmt: skip
# The closure-free variants (Lightning passes a closure, which these accept and call).
SCHEDULEFREE_CLASSES = ("AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree")
BITSANDBYTES_CLASSES = (
    "Adam8bit", "AdamW8bit", "PagedAdam8bit", "PagedAdamW8bit", "PagedAdamW", "PagedAdamW32bit", "Lion8bit",
    "PagedLion8bit", "SGD8bit", "RMSprop8bit", "Adagrad8bit", "LAMB8bit", "LARS8bit", "AdEMAMix8bit",
)  # fmt: skip
TORCHAO_CLASSES = ("Adam8bit", "AdamW8bit", "Adam4bit", "AdamW4bit", "AdamFp8", "AdamWFp8")


def default_providers(torch_names: Iterable[str]) -> tuple[Provider, ...]:
    """The four optional packages; ``torch_names`` are the names torch's optimizers already hold."""
    taken = frozenset(normalize_name(n) for n in torch_names)
    return (
        Provider("torch_optimizer", "torch-optimizer", _entries("torch_optimizer", "torch_optimizer", TORCH_OPTIMIZER_CLASSES, taken=taken)),
        Provider(
            "schedulefree",
            "schedulefree",
            _entries("schedulefree", "schedulefree", SCHEDULEFREE_CLASSES, refused_routes=(_NO_DEEPSPEED_MODE_SWITCH,)),
        ),
        Provider(
            "bitsandbytes",
            "bitsandbytes",
            _entries("bitsandbytes", "bitsandbytes.optim", BITSANDBYTES_CLASSES, prefix="bnb:", refused_routes=(_NO_FSDP2_DTENSORS,),
                     device_check="flashdist.optim.providers:bitsandbytes_device_problem"),
        ),
        Provider("torchao", "torchao", _entries("torchao", "torchao.optim", TORCHAO_CLASSES, prefix="torchao:")),
    )


def bitsandbytes_device_problem(device: Any) -> str | None:
    """Why bitsandbytes' installed build cannot run its optimizers on ``device`` (None: it can).

    bitsandbytes >= 0.46 lists its backends in ``supported_torch_devices``; earlier builds are CUDA only.
    """
    import bitsandbytes

    supported = getattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    if device.type in supported:
        return None
    version = getattr(bitsandbytes, "__version__", "?")
    return f"bitsandbytes {version} has no {device.type} backend (it serves {sorted(supported)})"


@dataclass
class ProviderSource:
    """A registry :class:`~flashdist.registry.Source` over the optional packages (checked once)."""

    providers: tuple[Provider, ...]
    _found: list[OptimizerEntry] | None = None
    _absent: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> list[OptimizerEntry]:
        if self._found is None:
            self._found = []
            for provider in self.providers:
                if provider.installed():
                    self._found += provider.entries
                else:
                    why = f"it comes from the package {provider.pip_name!r}, which is not installed (pip install {provider.pip_name})"
                    self._absent.update({normalize_name(e.name): why for e in provider.entries})
        return self._found

    def absent(self, name: str) -> str | None:
        self()
        return self._absent.get(normalize_name(name))


@dataclass
class EntryPointSource:
    """Entries third-party packages declare in an entry-point group.

    Reading the installed packages' metadata costs ~17 ms here, so it is read again only when
    ``sys.path`` changed (a package directory added to a running process is then seen).
    """

    group: str
    entry_type: type
    _loaded: dict[str, list[Any]] = field(default_factory=dict)
    _failed: set[str] = field(default_factory=set)
    _seen_path: tuple[str, ...] | None = None
    _entries: list[Any] = field(default_factory=list)

    def __call__(self) -> list[Any]:
        if self._seen_path == tuple(sys.path):
            return self._entries
        self._seen_path = tuple(sys.path)
        out: list[Any] = []
        for point in importlib.metadata.entry_points(group=self.group):
            key = f"{point.name}={point.value}"
            if key not in self._loaded and key not in self._failed:
                try:
                    self._loaded[key] = list(_as_entries(point.load(), self.entry_type))
                except Exception as error:  # a broken plugin must not break every Task: say so once, skip it
                    self._failed.add(key)
                    warnings.warn(f"flashdist: entry point {point.name!r} ({point.value}) in {self.group!r} failed to load: "
                                  f"{type(error).__name__}: {error}", UserWarning, stacklevel=4)
                    continue
            out += self._loaded.get(key, [])
        self._entries = out
        return out

    def absent(self, name: str) -> str | None:
        return None


def _as_entries(obj: Any, entry_type: type) -> Iterable[Any]:
    if callable(obj) and not isinstance(obj, (entry_type, type)):
        obj = obj()
    items = [obj] if isinstance(obj, entry_type) else list(obj)
    for item in items:
        if not isinstance(item, entry_type):
            raise TypeError(f"expected {entry_type.__name__} objects, got {type(item).__name__}")
    return items


def device_problem(entry: OptimizerEntry, device: Any) -> str | None:
    """Why ``entry`` cannot run on ``device`` (its provider's own check), or None."""
    if entry.device_check is None:
        return None
    check: Callable[[Any], str | None] = resolve_lazy(entry.device_check)
    return check(device)
