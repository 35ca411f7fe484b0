"""Check each section of a run config against the signature of the class it configures, before jsonargparse parses.

``trainer:`` configures ``flashdist.Trainer``; ``model:`` and ``data:`` name their class in
``class_path`` and its arguments in ``init_args``; an object inside them (a logger, a callback)
does the same. For each, flashdist refuses, as one ``ConfigError`` naming the key path, where it
came from, what the class accepts and a hint:

- a key the class does not take (with the close matches: "did you mean 'max_epochs'?"),
- a required argument the config does not give,
- a ``class_path`` that does not import, or is not a Task / DataModule where one is needed,
- a value that plainly cannot have the argument's type (``max_epochs: four``).

What it cannot judge cheaply (nested container types, classes behind an unreadable
``**kwargs``) it leaves to jsonargparse, whose own message flashdist then shows unchanged.

Example:
    >>> from flashdist.cli.config_layers import read_run_config
    >>> run = read_run_config(["--trainer.max_epoch=1"])
    >>> validate_run_config(run, [Section("trainer", target=Trainer)], {"trainer": None})  # doctest: +SKIP
    Traceback (most recent call last):
    flashdist.errors.ConfigError: unknown key 'trainer.max_epoch' in the command line ... HINT: did you mean 'max_epochs'?
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flashdist.cli.config_layers import CLASS_KEYS, COMMAND_LINE, KeyPath, RunConfig, dotted
from flashdist.cli.signatures import accepted_parameters, builds_only_typed_objects, describe_type, qualified_name, type_verdict
from flashdist.compat.jsonargparse import import_object
from flashdist.errors import ConfigError

_SPEC_KEYS = ("optimizer", "lr_scheduler")  # their forms have a hint of their own


@dataclass(frozen=True)
class Section:
    """A top-level config section: a fixed class (``target``), or a ``class_path`` naming a subclass of ``base``."""

    name: str
    target: type | None = None
    base: type | None = None
    required: bool = False


def validate_run_config(run: RunConfig, sections: Iterable[Section], top_level: Mapping[str, Any], other_keys_possible: bool = False) -> None:
    """Refuse the first problem in ``run`` (see the module docstring); ``top_level``: accepted key → type.

    ``other_keys_possible``: ``top_level`` may be incomplete, so no top-level key is refused as unknown.

    Example:
        >>> validate_run_config(RunConfig({"trainr": {}}), [], {"trainer": None})
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: unknown section 'trainr' in the config. Accepted: 'trainer'. HINT: did you mean 'trainer'?
    """
    sections = [section for section in sections if not run.is_carried((section.name,))]  # a file only jsonargparse reads
    for key, value in run.values.items():
        if key not in top_level and not other_keys_possible:
            what = "section" if isinstance(value, Mapping) else "key"
            raise _unknown(f"unknown {what} {key!r} {run.where((key,))}.", key, sorted(top_level), "`flashdist fit --help` lists them")
    missing = sorted(section.name for section in sections if section.required and section.name not in run.values)
    if missing and not run.prints_config:  # jsonargparse prints before it checks what is required: a template prints
        files = sorted({source for path, source in run.sources.items() if len(path) == 1})
        where = f" (from {', '.join(files)})" if files else ""
        raise ConfigError(
            f"the run needs the section(s) {missing}{where}.",
            hint="give a config (--config configs/quickstart.yaml) or each section's class_path and init_args.",
        )
    names = {section.name for section in sections}
    for key, annotation in top_level.items():
        if key in run.values and key not in names:
            _check_value(run, (key,), annotation, run.values[key])
    for section in sections:
        if run.values.get(section.name) is not None:
            _check_section(run, section, run.values[section.name])


def _check_section(run: RunConfig, section: Section, value: Any) -> None:
    path = (section.name,)
    if not isinstance(value, Mapping):
        if section.target is not None:
            raise ConfigError(f"{section.name}: {value!r} {run.where(path)} is not a section.", hint=f"write {section.name}: as a mapping of keys.")
        return  # a class name given some other way: jsonargparse's to read
    if section.target is not None:
        _check_arguments(run, path, section.target, value, qualified_name(section.target))
        return
    for key in value:
        if key not in CLASS_KEYS and not run.is_carried((*path, key)):
            raise ConfigError(
                f"unknown key {dotted((*path, key))!r} {run.where((*path, key))}: {section.name}: takes class_path and init_args.",
                hint=f"a class's arguments go under init_args: {section.name}.init_args.{key}.",
            )
    _check_object(run, path, value, section.base)


def _check_object(run: RunConfig, path: KeyPath, node: Mapping[str, Any], base: type | None = None) -> None:
    """``node`` is ``{class_path: ..., init_args: {...}}``: the class must import and take those arguments."""
    class_path = node.get("class_path")
    init_args = node.get("init_args", {})
    if class_path is None and base is not None and isinstance(init_args, Mapping) and not inspect.isabstract(base):
        # No class named anywhere: jsonargparse builds the section's own base class (a plain Task) from these
        _check_arguments(run, (*path, "init_args"), base, init_args, qualified_name(base), given=node.get("dict_kwargs") or {})
        return
    if not isinstance(class_path, str) or not isinstance(init_args, (Mapping, type(None))):
        return  # a shape jsonargparse reads (or refuses) itself
    cls = _resolve(run, path, class_path, base)
    if cls is None:
        return
    if base is not None and not (inspect.isclass(cls) and issubclass(cls, base)):
        raise ConfigError(
            f"{dotted(path)}.class_path={class_path!r} {run.where((*path, 'class_path'))} is not a {base.__name__}.",
            accepted=f"a subclass of {qualified_name(base)}",
            hint="e.g. flashdist.image.ImageClassifier for model:, flashdist.data.SyntheticImageDataModule for data:.",
        )
    _check_arguments(run, (*path, "init_args"), cls, init_args or {}, class_path, given=node.get("dict_kwargs") or {})


def _resolve(run: RunConfig, path: KeyPath, class_path: str, base: type | None) -> Any:
    """The class ``class_path`` names; None when only jsonargparse can tell (a short name)."""
    if "." not in class_path:
        if base is None:
            return None
        found = [cls for cls in _subclasses(base) if cls.__name__ == class_path]
        return found[0] if len(found) == 1 else None
    try:
        return import_object(class_path)
    except Exception as error:  # ImportError, AttributeError, or the module's own failure on import
        module, _, name = class_path.rpartition(".")
        close = difflib.get_close_matches(name, _class_names(module), n=1)
        hint = f"did you mean '{module}.{close[0]}'?" if close else (
            "give the full import path of the class, e.g. flashdist.image.ImageClassifier or flashdist.data.SyntheticImageDataModule."
        )
        raise ConfigError(f"{dotted(path)}.class_path={class_path!r} {run.where((*path, 'class_path'))} cannot be imported: {error}.", hint=hint) from None


def _subclasses(base: type) -> list[type]:
    found, stack = [], list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def _class_names(module: str) -> list[str]:
    try:
        namespace = vars(importlib.import_module(module))
    except Exception:  # the module itself does not import: no names to suggest
        return []
    return [name for name, value in namespace.items() if inspect.isclass(value) and not name.startswith("_")]


def _check_arguments(run: RunConfig, path: KeyPath, target: Any, arguments: Mapping[str, Any], owner: str, given: Mapping[str, Any] = {}) -> None:
    accepted = accepted_parameters(target)
    for key, value in arguments.items():
        key_path = (*path, key)
        if run.is_carried(key_path):
            continue
        parameter = accepted.parameters.get(key)
        if parameter is None:
            if accepted.open:
                continue  # behind a **kwargs flashdist cannot follow: jsonargparse judges it
            raise _unknown(f"unknown key {dotted(key_path)!r} {run.where(key_path)}: {owner} takes no argument {key!r}.", key,
                           accepted.names(), f"`flashdist fit --help` lists every key (`--{path[0]}.help {owner}` those of {owner})")
        _check_value(run, key_path, parameter.annotation, value)
    missing = [p.name for p in accepted.parameters.values() if p.required and p.name not in arguments and p.name not in given]
    if missing and not run.prints_config:
        raise ConfigError(
            f"{dotted(path)} {run.where(path)} does not give {', '.join(map(repr, missing))}, which {owner} requires.",
            hint=f"add {missing[0]}: under {dotted(path)}" + ("" if _has_index(path) else f", or --{dotted(path)}.{missing[0]}=<value>") + ".",
        )


def _check_value(run: RunConfig, path: KeyPath, annotation: Any, value: Any) -> None:
    if type_verdict(annotation, value, from_command_line=run.source(path) == COMMAND_LINE) == "refuse":
        name = dotted(path)
        if path[-1] in _SPEC_KEYS:
            hint = "write a name (adamw) or [name, {kwargs}]; lr_scheduler also takes [name, {kwargs}, {monitor: ..., interval: ...}]."
        else:
            hint = f"fix {name} {run.where(path)}" + ("" if _has_index(path) else f", or override it: --{name}=<value>") + "."
        raise ConfigError(f"{name}={value!r} {run.where(path)} is not a valid value.", accepted=describe_type(annotation), hint=hint)
    if builds_only_typed_objects(annotation):  # under dict / Any / a Callable, jsonargparse keeps or fills in a class_path itself
        _check_nested(run, path, value)


def _check_nested(run: RunConfig, path: KeyPath, value: Any) -> None:
    """Objects inside a value (``logger: [{class_path: ...}]``) are checked against their own classes."""
    if isinstance(value, Mapping) and "class_path" in value:
        _check_object(run, path, value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_nested(run, (*path, index), item)


def _unknown(message: str, key: Any, accepted: list[str], otherwise: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), accepted, n=2)  # YAML reads `1:` and `on:` as an int and a bool
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"{otherwise}."
    if not isinstance(key, str):
        hint = f"YAML read this key as the {type(key).__name__} {key!r} (unquoted on/off/yes/no are booleans); keys are names. " + hint
    return ConfigError(message, accepted=accepted or None, hint=hint)


def _has_index(path: KeyPath) -> bool:
    return any(isinstance(part, int) for part in path)
