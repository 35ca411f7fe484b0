"""Per-Task-class registries that double as Lightning's ``optimizers()`` / ``lr_schedulers()``.

``ImageClassifier.lr_schedulers`` (on the class) is a registry that registers a recipe when
used as a decorator; ``self.lr_schedulers()`` (on an instance) is still LightningModule's
method, which manual optimization needs. Each class gets its own child registry on first
access, so a recipe registered on a subclass never leaks into its parents.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningModule

from flashdist.optim.entries import OptimizerEntry, SchedulerEntry
from flashdist.registry import Registry


class RecipeRegistry(Registry):
    """A registry that is also a decorator registering ``fn`` as a recipe under its name."""

    def __init__(self, kind: str, parent: Registry | None, make_entry: Callable[[str, Callable], Any]):
        super().__init__(kind, parent)
        self._make_entry = make_entry

    def __call__(self, fn: Callable | None = None, *, name: str | None = None, override: bool = False) -> Any:
        def register(fn: Callable) -> Callable:
            # `name or ...` would quietly take fn.__name__ for name=0 or ""; register() refuses a non-string name
            self.register(self._make_entry(fn.__name__ if name is None else name, fn), override=override)
            return fn

        return register(fn) if fn is not None else register


def _optimizer_recipe(name: str, fn: Callable) -> OptimizerEntry:
    return OptimizerEntry(name, fn, "recipe")


def _scheduler_recipe(name: str, fn: Callable) -> SchedulerEntry:
    return SchedulerEntry(name, fn, "recipe")


class RegistryAccessor:
    """Descriptor: the class's recipe registry on the class, Lightning's method on instances."""

    def __init__(self, root: Registry, make_entry: Callable[[str, Callable], Any]):
        self._root = root
        self._make_entry = make_entry
        # Each class's own registry, kept here rather than as an attribute on the class (which
        # may be a user's); weak, so a class defined in a test or a notebook can go away.
        self._registries: weakref.WeakKeyDictionary[type, RecipeRegistry] = weakref.WeakKeyDictionary()

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name
        self._home = owner  # the class that defines the accessor: its registry's parent is the root

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is not None:
            return getattr(LightningModule, self._name).__get__(instance, owner)
        return self.registry_for(owner)

    def registry_for(self, owner: type) -> RecipeRegistry:
        registry = self._registries.get(owner)
        if registry is None:
            bases = [base for base in owner.__mro__[1:] if issubclass(base, self._home)]
            parent = self.registry_for(bases[0]) if bases else self._root
            registry = self._registries[owner] = RecipeRegistry(self._root.kind, parent, self._make_entry)
        return registry


def accessors(optimizers: Registry, lr_schedulers: Registry) -> tuple[RegistryAccessor, RegistryAccessor]:
    return RegistryAccessor(optimizers, _optimizer_recipe), RegistryAccessor(lr_schedulers, _scheduler_recipe)
