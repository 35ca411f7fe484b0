"""Read a run config file strictly: a YAML mapping, no key given twice.

PyYAML, like YAML itself, keeps the last of two equal keys without a word: ``max_epochs``
twice trains with the second, and a second ``trainer:`` section silently replaces the first
(``default_root_dir`` included, so the run's files land in the current directory). jsonargparse
reads the file the same way. flashdist reads every ``--config`` file once more, before
jsonargparse does, with a loader that refuses a duplicated key, naming it and both lines.

Example:
    >>> load_run_config("configs/quickstart.yaml")["trainer"]["strategy"]  # doctest: +SKIP
    'ddp'
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from flashdist.errors import ConfigError

SHAPE = (
    "a run config is a YAML mapping with trainer:, model: and data: sections, e.g.\n"
    "  trainer:\n    max_epochs: 2\n  model:\n    class_path: flashdist.image.ImageClassifier\n    init_args: {num_classes: 10}\n"
    "  data:\n    class_path: flashdist.data.SyntheticImageDataModule"
)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (merge keys ``<<`` excepted).

    Example:
        >>> yaml.load("a: 1\\na: 2\\n", Loader=UniqueKeyLoader)
        Traceback (most recent call last):
        ...
        flashdist.errors.ConfigError: key 'a' is given twice in the config: line 1 and line 2. ...
    """

    source = "the config"

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = dict(_mapping_paths(node, ""))
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise _duplicate(key, getattr(self, "_paths", {}).get(id(node), ""), first_line[key], line, self.source)
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _mapping_paths(node: yaml.Node, path: str) -> Iterator[tuple[int, str]]:
    """(id of each mapping node, its dotted key path), for messages."""
    if isinstance(node, yaml.MappingNode):
        yield id(node), path
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            yield from _mapping_paths(value_node, f"{path}.{key}" if path else key)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _mapping_paths(item, f"{path}[{index}]")


def _duplicate(key: Any, parent: str, first: int, second: int, source: str) -> ConfigError:
    if parent:
        what = f"key '{parent}.{key}'"
    elif key in ("trainer", "model", "data"):
        what = f"section '{key}:'"
    else:
        what = f"key {key!r}"
    return ConfigError(
        f"{what} is given twice in {source}: line {first} and line {second}.",
        hint="YAML would silently keep only the second; delete one of them (or merge the two sections into one).",
    )


def load_run_config(path: str | Path) -> dict[str, Any]:
    """The mapping in ``path``; a ConfigError for a directory, bad YAML, a duplicated key, or anything but a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {str(path)!r} is a directory, not a config file.", hint=SHAPE.replace("\n", "\n  ", 1))
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {error.strerror or error}.") from None
    loader = UniqueKeyLoader(text)
    loader.source = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        raise _not_yaml(path, error) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        given = "empty (or only comments)" if data is None else f"a {_kind(data)} ({_short(data)})"
        raise ConfigError(f"config file {str(path)!r} is {given}, not a mapping.", hint=SHAPE)
    return data


def _not_yaml(path: Path, error: yaml.YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"config file {str(path)!r} is not valid YAML: {problem}{at}.", hint="check the indentation and brackets at that line.")


def _kind(data: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(data), type(data).__name__)


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["SHAPE", "UniqueKeyLoader", "load_run_config"]
