"""The run config as jsonargparse will see it: the ``--config`` files, then the command-line overrides.

flashdist reads the same arguments before jsonargparse does, so that its checks of each section
(``cli/config_validation.py``) can name the key, the value and where it came from (a file, or
the command line). It merges as jsonargparse does for the forms people write: files in order,
mappings merged key by key, lists replaced, ``--a.b=value`` read as YAML, ``--model.key`` meaning
``--model.init_args.key``, ``--model=Name`` setting the class, a mapping without ``class_path``
over an earlier class meaning its ``init_args``, a section given as the path of a file of its
own (``trainer: trainer.yaml``, relative to the file that names it), a ``config:`` inside a file
including another one, ``$schema:`` ignored. A form it does not read (``--help``, ``+`` appends,
an override into a list, a bare flag, ``--config -``) makes it step aside: ``read_run_config``
returns None and jsonargparse alone judges the arguments.

Example:
    >>> run = read_run_config(["--config", "configs/quickstart.yaml", "--trainer.max_epochs=1"])  # doctest: +SKIP
    >>> run.values["trainer"]["max_epochs"], run.source(("trainer", "max_epochs"))  # doctest: +SKIP
    (1, 'the command line')
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flashdist.cli.config_file import load_run_config
from flashdist.errors import ConfigError

COMMAND_LINE = "the command line"
CLASS_KEYS = frozenset({"class_path", "init_args", "dict_kwargs", "__path__"})
_PRINT_CONFIG_FLAGS = {"skip_default", "skip_unset", "skip_null", "comments"}  # jsonargparse's, skip_null deprecated
_SCHEMA_KEY = "$schema"  # for editors; jsonargparse drops it at any level
_FILE_SECTIONS = frozenset({"trainer"})  # besides the class sections: a group LightningCLI adds with sub_configs=True


class _StepAside(Exception):
    """A form flashdist does not read: jsonargparse alone judges the arguments."""

KeyPath = tuple[Any, ...]  # str keys, int list indices


@dataclass
class RunConfig:
    """The merged values, where each key came from, and which keys are jsonargparse's to judge."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[KeyPath, str] = field(default_factory=dict)
    # init_args kept from an earlier class_path after the class changed: jsonargparse decides
    # which of them the new class takes, so flashdist checks none of them. A whole section here
    # (one given as a file flashdist does not read) is left to jsonargparse too.
    carried: set[KeyPath] = field(default_factory=set)
    # --print_config: jsonargparse prints before it checks required arguments, so a template prints
    prints_config: bool = False

    def source(self, path: KeyPath) -> str:
        """The file (or ``the command line``) that set ``path`` or the nearest section above it."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.sources:
                return self.sources[path[:end]]
        return "the config"

    def where(self, path: KeyPath) -> str:
        """``in run.yaml`` or ``on the command line``, for messages."""
        source = self.source(path)
        return f"on {source}" if source == COMMAND_LINE else f"in {source}"

    def is_carried(self, path: KeyPath) -> bool:
        return any(path[:end] in self.carried for end in range(1, len(path) + 1))


def dotted(path: KeyPath) -> str:
    """``("trainer", "logger", 0, "init_args")`` → ``trainer.logger[0].init_args``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else (f".{part}" if text else str(part))
    return text


def read_run_config(args: list[str], class_sections: frozenset[str] = frozenset({"model", "data"})) -> RunConfig | None:
    """Merge ``args`` (a subcommand's arguments, without the subcommand) as jsonargparse will.

    ``class_sections`` are the sections given as ``class_path`` + ``init_args`` (LightningCLI's
    subclass mode). None: the arguments ask for help or hold a form flashdist does not read.
    """
    try:
        return _read(args, class_sections)
    except _StepAside:
        return None


def _read(args: list[str], class_sections: frozenset[str]) -> RunConfig | None:
    run = RunConfig()
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-h", "--help") or arg.split("=", 1)[0].endswith(".help"):
            return None
        if arg in ("-c", "--config") or arg.startswith("--config="):
            if "=" in arg:
                given = arg.split("=", 1)[1]
            elif index + 1 < len(args):
                given, index = args[index + 1], index + 1
            else:
                return None
            layer, source, base = _config_layer(given)
            _merge(run, run.values, layer, (), source, class_sections, base)
            index += 1
            continue
        if arg.startswith("--print_config"):
            run.prints_config = True
            following = args[index + 1] if index + 1 < len(args) else ""
            if "=" not in arg and following and set(following.split(",")) <= _PRINT_CONFIG_FLAGS:
                index += 1
            index += 1
            continue
        if not arg.startswith("--") or "+=" in arg:
            return None
        key, equals, raw = arg[2:].partition("=")
        if not equals:
            if index + 1 >= len(args) or args[index + 1].startswith("--"):
                return None  # a bare flag: its meaning is the parser's
            raw, index = args[index + 1], index + 1
        index += 1
        path = tuple(key.split("."))
        if not all(path) or any(part.endswith("+") for part in path):  # `--trainer.callbacks+ X` appends: jsonargparse's to read
            return None
        if not _override(run, path, _yaml_value(raw), class_sections):
            return None
    return run


def _config_layer(given: str) -> tuple[dict[str, Any], str, Path]:
    """A ``--config`` value: (its mapping, its source for messages, the folder its relative paths start from)."""
    if given == "-":
        raise _StepAside  # jsonargparse reads the config from stdin
    path = Path(given).expanduser()  # jsonargparse expands ~ as well
    if _is_file_or_dir(path):
        return load_run_config(path), given, path.parent  # a directory, bad YAML, a duplicated key, a non-mapping: refused there
    inline = _yaml_value(given)
    if isinstance(inline, dict):  # jsonargparse also takes the config itself as the value of --config
        return inline, "the --config text", Path.cwd()
    raise ConfigError(f"config file {given!r} does not exist.", hint="configs/ holds quickstart.yaml and friends.")


def _is_file_or_dir(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name longer than the file system allows: an inline config, not a path
        return False


def _sub_config(value: str, base: Path) -> Path | None:
    """The file a section (or ``config:``) given as a string names, relative to ``base`` first, as jsonargparse looks."""
    for candidate in (base / Path(value).expanduser(), Path(value).expanduser()):
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


def _yaml_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _is_class_node(path: KeyPath, node: Any, class_sections: frozenset[str]) -> bool:
    return (len(path) == 1 and path[0] in class_sections) or (isinstance(node, dict) and "class_path" in node)


def _merge(run: RunConfig, into: dict[str, Any], layer: dict[str, Any], prefix: KeyPath, source: str,
           class_sections: frozenset[str], base: Path | None = None) -> None:
    """Merge one layer into ``into`` as jsonargparse does; ``base``: the folder a relative sub-config path starts from."""
    base = Path.cwd() if base is None else base
    for key, value in layer.items():
        path = (*prefix, key)
        if key == _SCHEMA_KEY:
            continue
        if isinstance(key, str) and key.endswith("+"):
            raise _StepAside  # `callbacks+:` appends to the list before it: jsonargparse's to read
        if not prefix and key == "config" and source != COMMAND_LINE:
            _include(run, value, base, class_sections)  # keys after it override it, as they merge after
            continue
        if len(path) == 1 and key in class_sections | _FILE_SECTIONS and isinstance(value, str):
            file = _sub_config(value, base)
            if file is not None:
                _merge_section_file(run, into, key, file, class_sections)
                continue
        if len(path) == 1 and key in class_sections and isinstance(value, str):
            value = {"class_path": value}  # `model: Name` names the class
        if len(path) == 1 and key in class_sections and isinstance(value, dict) and value and not CLASS_KEYS & set(value):
            value = {"init_args": value}  # no class named: the arguments of the class before, else of the section's base class
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "class_path" in old and not CLASS_KEYS & set(value):
                value = {"init_args": value}  # over an earlier class, a plain mapping is its init_args
            if "class_path" in value and old.get("class_path") not in (None, value["class_path"]):
                _class_changed(run, old, path)
            _merge(run, old, value, path, source, class_sections, base)
        else:
            into[key] = copy.deepcopy(value)
            _record(run, path, value, source)


def _include(run: RunConfig, value: Any, base: Path, class_sections: frozenset[str]) -> None:
    """``config: base.yaml`` inside a config file: jsonargparse merges that file at this point."""
    file = _sub_config(value, base) if isinstance(value, str) else None
    if file is None:
        raise _StepAside  # a list, inline text, or a path flashdist does not find: jsonargparse's to judge
    _merge(run, run.values, load_run_config(file), (), str(file), class_sections, file.parent)


def _merge_section_file(run: RunConfig, into: dict[str, Any], key: str, file: Path, class_sections: frozenset[str]) -> None:
    """``trainer: trainer.yaml``: the section's keys from a file of their own (one that is no mapping: jsonargparse's)."""
    try:
        loaded = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError):
        loaded = None
    if isinstance(loaded, dict):
        _merge(run, into, {key: load_run_config(file)}, (), str(file), class_sections, file.parent)
        return
    into[key] = str(file)
    _record(run, (key,), str(file), str(file))
    run.carried.add((key,))


def _record(run: RunConfig, path: KeyPath, value: Any, source: str) -> None:
    """``path`` was set to ``value`` by ``source``: what an earlier layer said below it is gone."""
    run.sources = {key: where for key, where in run.sources.items() if key[: len(path)] != path}
    run.carried = {carried for carried in run.carried if carried[: len(path)] != path}
    run.sources[path] = source
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        _record(run, (*path, key), child, source)


def _class_changed(run: RunConfig, node: dict[str, Any], path: KeyPath) -> None:
    for key in node.get("init_args") or {}:
        run.carried.add((*path, "init_args", key))


def _override(run: RunConfig, path: KeyPath, value: Any, class_sections: frozenset[str]) -> bool:
    """Apply ``--path=value``; False when the path goes through a list (jsonargparse's to resolve)."""
    node: Any = run.values
    walked: KeyPath = ()
    parts = list(path)
    while parts:
        key = parts.pop(0)
        if _is_class_node(walked, node, class_sections) and key not in CLASS_KEYS:
            parts.insert(0, key)
            key = "init_args"  # --model.num_classes is --model.init_args.num_classes
        if not parts:
            break
        child = node.get(key)
        if isinstance(child, list):
            return False
        if not isinstance(child, dict):
            child = node[key] = {}
        node, walked = child, (*walked, key)
    target = (*walked, key)
    if len(target) == 1:  # --model=Name, --trainer=trainer.yaml, --model='{num_classes: 10}': as a file's section reads
        _merge(run, node, {key: value}, (), COMMAND_LINE, class_sections)
        return True
    if isinstance(value, dict) and isinstance(node.get(key), dict):
        _merge(run, node, {key: value}, walked, COMMAND_LINE, class_sections)
        return True
    if key == "class_path" and node.get("class_path") not in (None, value):
        _class_changed(run, node, walked)
    node[key] = copy.deepcopy(value)
    _record(run, target, value, COMMAND_LINE)
    return True
