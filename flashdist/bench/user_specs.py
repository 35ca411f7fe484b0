"""``flashdist bench schedulers --scheduler SPEC``: the scheduler forms a user brings, from CLI text.

A Task accepts a name, ``(name, kwargs)``, ``(name, kwargs, lightning_config)``, a recipe
name, or a callable taking the optimizer. On a command line these are written as:

- ``NAME``: a registered scheduler (``cosine_schedule_with_warmup``, ``hf:...``, ``steplr``)
  or a recipe registered on a Task class (``--import`` the module that registers it);
- ``[NAME, {KWARGS}]`` (YAML or JSON text; ``(...)`` is read as ``[...]`` too);
- ``MODULE:CALLABLE``: ``callable(optimizer) -> scheduler``, imported from a module on
  ``sys.path`` (a function, a ``functools.partial``, a recipe function).

Every spec is parsed and built once, before any timing, so a typo is a ``ConfigError`` at
once, not after minutes of other candidates.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flashdist.errors import ConfigError

_CALLABLE_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
ACCEPTED = "a registered name or recipe, '[name, {kwargs}]' (YAML/JSON), or 'module:callable' taking the optimizer"


@dataclass(frozen=True)
class UserSchedulerSpec:
    """One ``--scheduler`` argument: its label in the table and the spec a Task would accept."""

    label: str
    spec: Any  # str | tuple | callable: what Task(lr_scheduler=...) takes
    uses_bench_kwargs: bool = False  # a bare name: the bench's default kwargs apply (as in a full run)


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules that register recipes (``--import``), refusing an unknown one early.

    The working directory is searched first, as ``python -m`` does: the ``flashdist`` script's
    own ``sys.path`` starts at its bin folder, so ``--import mymod`` would miss ``./mymod.py``.
    """
    _working_directory_on_path()
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"--import {module!r} failed: {error}.", hint="give a module in the working directory, on PYTHONPATH, or installed.") from error


def parse_scheduler_arg(text: str) -> UserSchedulerSpec:
    """Read one ``--scheduler`` value into the spec a Task would accept.

    Example:
        >>> parse_scheduler_arg("[steplr, {step_size: 10}]").spec
        ('steplr', {'step_size': 10})
        >>> parse_scheduler_arg("hf:linear_schedule_with_warmup").uses_bench_kwargs
        True
    """
    stripped = text.strip()
    if not stripped:
        raise ConfigError("--scheduler '' is empty.", accepted=ACCEPTED)
    if stripped[0] in "[(":
        return UserSchedulerSpec(stripped, _tuple_spec(stripped))
    if _is_registered(stripped):  # before module:callable, which 'hf:<name>' also looks like
        return UserSchedulerSpec(stripped, stripped, uses_bench_kwargs=True)
    if _CALLABLE_PATH.match(stripped):
        return UserSchedulerSpec(stripped, _import_callable(stripped))
    from flashdist.optim import LR_SCHEDULERS

    LR_SCHEDULERS.get(stripped)  # raises the registry's error: close matches and how to list them
    raise AssertionError("unreachable: the registry refuses unknown names")


def _tuple_spec(text: str) -> tuple:
    from flashdist.spec_text import read_spec_text

    return read_spec_text(text, "--scheduler")  # the forms `flashdist plan --lr-scheduler` and a config read


def _working_directory_on_path() -> None:
    if not ({"", os.getcwd()} & set(sys.path)):
        sys.path.insert(0, os.getcwd())


def _import_callable(path: str) -> Any:
    _working_directory_on_path()
    module_name, _, attr_path = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"--scheduler {path!r}: cannot import {module_name!r}: {error}.", accepted=ACCEPTED,
                          hint="the module must be importable (in the working directory, on PYTHONPATH, or installed).") from error
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ConfigError(f"--scheduler {path!r}: {module_name!r} has no attribute {attr_path!r}.", accepted=ACCEPTED)
        target = getattr(target, attr)
    if not callable(target):
        raise ConfigError(f"--scheduler {path!r} is a {type(target).__name__}, not a callable.", accepted=ACCEPTED)
    return target


def _is_registered(name: str) -> bool:
    from flashdist.bench.schedulers import scheduler_names

    return bool(scheduler_names([name]))
