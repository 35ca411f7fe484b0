"""Turn jsonargparse's parse errors into ``ConfigError``s that name the key path and the accepted values.

jsonargparse reports a bad ``model.init_args.backbonee`` as a nested union dump
("Parser key "model": Does not validate against any of the Union subtypes ... Option
'backbonee' is not accepted ... Given value: {...}"). The facts are all there; this module
pulls out the key path, what was given, and what is accepted, and keeps the raw text only
when it recognizes nothing.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from typing import Any

from flashdist.errors import ConfigError

_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_OPTION = re.compile(r"Option '([^']+)' is not accepted")
_GROUP_OPTION = re.compile(r"(Group|Subcommand) '([^']+)' does not accept option '([^']+)'")
_NO_FILE = re.compile(r"File does not exist: '([^']+)'")
_REQUIRED = re.compile(r"the following arguments are required: (.+)$", re.MULTILINE)
_UNRECOGNIZED = re.compile(r"unrecognized arguments: --([^\s=]+)")
_KEY_NOT_EXPECTED = re.compile(r"Key '([^']+)' is not expected")
_GIVEN = re.compile(r"(?:Given value|Got value): (.*)")
_GIVEN_ONLY = re.compile(r"Given value: (.*)")
_EXPECTED = re.compile(r"Expected an? (.+?)(?:\. Got value:.*)?$", re.MULTILINE)
_SUBTYPES = re.compile(r"Subtypes: \[(.*)\]")
_CLASS_NAME = re.compile(r"<class '([^']+)'>")

SECTION_CLASSES = {"trainer": "flashdist.runtime.trainer.Trainer"}


def config_error_from_parse(message: str, top_level_keys: list[str], config_files: list[str]) -> ConfigError:
    """A ``ConfigError`` for one jsonargparse error message.

    Example:
        >>> str(config_error_from_parse("Group 'trainer' does not accept option 'max_epoch'", [], []))[:46]
        "unknown key 'trainer.max_epoch' in the config."
    """
    where = f" (from {', '.join(config_files)})" if config_files else ""
    if message.startswith("Problems parsing config"):
        detail = message.split(":", 1)[1].strip()
        return ConfigError(f"the config is not valid YAML{where}: {detail}", hint="check the indentation and brackets at that line.")
    missing_file = _NO_FILE.search(message)
    if missing_file:
        return ConfigError(f"config file {missing_file.group(1)!r} does not exist.", hint="configs/ holds quickstart.yaml and friends.")
    required = _REQUIRED.search(message)
    if required:
        keys = [key.split(".", 1)[-1] for key in required.group(1).split(", ")]
        return ConfigError(
            f"the run needs the section(s) {keys}{where}.",
            hint="give a config (--config configs/quickstart.yaml) or each section's class_path and init_args.",
        )
    top = _PARSER_KEY.search(message)
    class_path = _CLASS_PATH.search(message)
    if class_path:
        section = top.group(1) if top else "model"
        return _class_error(section, class_path.group(1), message[class_path.end():], where)
    group = _GROUP_OPTION.search(message)
    if group:
        kind, owner, key = group.groups()
        path = f"{owner}.{key}" if kind == "Group" else key
        return _unknown_path(path, top_level_keys, where)
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        return _unknown_path(unrecognized.group(1), top_level_keys, where)
    option = _OPTION.search(message) or _KEY_NOT_EXPECTED.search(message)
    if option:
        path = option.group(1)
        return _unknown_key(path, path.split(".")[0], top_level_keys, where, what="section" if "." in path else "key")
    if top:
        return _wrong_type(top.group(1), _from_line_of(message, top.start()), where)
    return ConfigError(f"the config was refused{where}: {_short(message)}", hint="run with --help to see the accepted keys.")


def _unknown_path(path: str, top_level_keys: list[str], where: str) -> ConfigError:
    first, _, rest = path.partition(".")
    if not rest or (top_level_keys and first not in top_level_keys):
        return _unknown_key(path if not rest else first, first, top_level_keys, where, what="key" if not rest else "section")
    section, _, leaf = path.rpartition(".")
    return _unknown_key(path, leaf, accepted_keys(SECTION_CLASSES.get(section)), where)


def _class_error(section: str, class_path: str, rest: str, where: str) -> ConfigError:
    option = _OPTION.search(rest) or _KEY_NOT_EXPECTED.search(rest)
    nested = _PARSER_KEY.search(rest)
    if option and (not nested or option.start() < nested.start()):
        key = option.group(1).removeprefix("init_args.")
        return _unknown_key(f"{section}.init_args.{key}", key, accepted_keys(class_path), where, owner=class_path)
    if nested:
        return _wrong_type(f"{section}.init_args.{nested.group(1)}", _from_line_of(rest, nested.start()), where)
    detail = rest.lstrip(": \n").strip()
    first_line = detail.splitlines()[0] if detail else "cannot be imported"
    return ConfigError(
        f"{section}.class_path={class_path!r} is not usable{where}: {first_line.strip()}",
        hint="give the full import path of the class, e.g. flashdist.image.ImageClassifier or flashdist.data.SyntheticImageDataModule.",
    )


def _unknown_key(path: str, key: str, accepted: list[str], where: str, owner: str | None = None, what: str = "key") -> ConfigError:
    close = difflib.get_close_matches(key, accepted, n=2)
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
    else:
        hint = f"see `flashdist fit --help`{f' or --model.help {owner}' if owner else ''} for every key."
    return ConfigError(f"unknown {what} {path!r} in the config{where}.", accepted=accepted or None, hint=hint)


def _wrong_type(path: str, message: str, where: str) -> ConfigError:
    message = _own_block(message)
    givens = _GIVEN.findall(message)
    # "Given value:" is the key's own value; a "Got value:" may be a union member's rendering of it.
    given = next((g for g in _GIVEN_ONLY.findall(message)), givens[0] if givens else "?").strip()
    subtypes = _SUBTYPES.search(message)
    if subtypes:
        accepted = _type_names(subtypes.group(1))
    else:
        expected = _EXPECTED.search(message)
        accepted = _type_names(expected.group(1)) if expected else []
    hint = None
    if "float" in accepted and re.fullmatch(r"['\"]?[-+]?\d[\d.]*e[-+]?\d+['\"]?", given, re.IGNORECASE):
        hint = "write the number with a dot and unquoted, e.g. 1.0e-3."
    if path.endswith((".optimizer", ".lr_scheduler")):
        hint = "write a name (adamw) or [name, {kwargs}]; lr_scheduler also takes [name, {kwargs}, {monitor: ..., interval: ...}]."
    return ConfigError(
        f"{path}: got {given}, which is not a valid value{where}.",
        accepted=" | ".join(accepted) if accepted else None,
        hint=hint or f"fix {path} in the YAML, or override it: --{path}=<value>.",
    )


def _from_line_of(text: str, position: int) -> str:
    return text[text.rfind("\n", 0, position) + 1 :]


def _own_block(message: str) -> str:
    """The first line and the lines indented under it: the part that is about this key only."""
    lines = message.splitlines()
    if not lines:
        return message
    indent = len(lines[0]) - len(lines[0].lstrip())
    block = [lines[0]]
    for line in lines[1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return "\n".join(block)


def _type_names(text: str) -> list[str]:
    names = []
    for part in re.split(r",\s*(?![^\[]*\])", text):
        part = part.strip()
        if not part:
            continue
        match = _CLASS_NAME.fullmatch(part)
        name = match.group(1) if match else part
        name = {"NoneType": "null"}.get(name, name).replace("typing.", "").replace("collections.abc.", "")
        if name not in names:
            names.append(name)
    return names


@cache
def accepted_keys(class_path: str | None) -> list[str]:
    """The init keys jsonargparse accepts for ``class_path`` (its ``**kwargs`` chain followed)."""
    if class_path is None:
        return []
    from jsonargparse import ArgumentParser

    from flashdist.compat.jsonargparse import import_object

    try:
        cls: Any = import_object(class_path)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, fail_untyped=False)
    except Exception:  # an unimportable class is reported by the caller; no list is better than a crash
        return []
    return list(vars(parser.get_defaults()))


def _short(message: str, max_lines: int = 8) -> str:
    lines = [line for line in message.splitlines() if not line.strip().startswith("Given value")]
    return "\n".join(lines[:max_lines])
