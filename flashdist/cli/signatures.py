"""What a class configured from YAML accepts, read from its signature, and a cheap type check.

A config section configures a class (``trainer:`` → ``flashdist.Trainer``, ``model:`` → the
``class_path`` under it). Its accepted keys are the parameters of ``__init__``; a ``**kwargs``
that ``__init__`` hands to ``super().__init__`` adds the parent's parameters, as jsonargparse
reads them (a parameter the child also passes by name stays listed: a superset refuses nothing
valid). A ``**kwargs`` that goes anywhere else leaves the
set *open*: flashdist then refuses no key of that class and leaves the judgement to jsonargparse.

The type check is deliberately partial: it refuses a value only when the annotation is one of
a few plain forms (int, float, str, bool, None, Literal, bare containers, unions of them) and
the value cannot be one of them; anything else is left to jsonargparse.

Example:
    >>> from flashdist.image import ImageClassifier
    >>> accepted = accepted_parameters(ImageClassifier)
    >>> accepted.names()[:2], accepted.open
    (['num_classes', 'backbone'], False)
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any, Literal

Verdict = Literal["accept", "refuse", "unknown"]
_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: Any  # the resolved type hint, or inspect.Parameter.empty
    required: bool


@dataclass(frozen=True)
class Accepted:
    """The keyword parameters a class (or function) takes from a config, in signature order."""

    owner: str
    parameters: dict[str, Parameter] = field(default_factory=dict)
    open: bool = False  # a **kwargs flashdist could not follow: any key may be valid

    def names(self) -> list[str]:
        return list(self.parameters)


def qualified_name(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    return name if module in (None, "builtins") else f"{module}.{name}"


@cache
def accepted_parameters(target: Any) -> Accepted:
    """The parameters ``target`` accepts from a config section (``**kwargs`` followed through ``super``).

    Example:
        >>> from flashdist.runtime.trainer import Trainer
        >>> "max_epochs" in accepted_parameters(Trainer).parameters  # Lightning's, through **kwargs
        True
    """
    if inspect.isclass(target):
        return method_parameters(target, "__init__")
    parameters: dict[str, Parameter] = {}
    kwargs_name, unreadable = _own_parameters(target, parameters, own=True)
    return Accepted(qualified_name(target), parameters, open=unreadable or kwargs_name is not None)


@cache
def method_parameters(cls: type, method: str) -> Accepted:
    """The parameters of ``cls.<method>``, a ``**kwargs`` handed to ``super().<method>`` followed up the MRO.

    Example:
        >>> from flashdist.runtime.trainer import Trainer
        >>> "ckpt_path" in method_parameters(Trainer, "fit").parameters  # flashdist's fit(*args, **kwargs) -> Lightning's
        True
    """
    parameters: dict[str, Parameter] = {}
    owner = qualified_name(cls) if method == "__init__" else f"{qualified_name(cls)}.{method}"
    own = True  # a parent's required argument may be one the child passes itself: only the class's own are required
    for klass in cls.__mro__:
        if method not in vars(klass) or klass is object:
            continue
        function = vars(klass)[method]
        kwargs_name, unreadable = _own_parameters(function, parameters, own)
        own = False
        if unreadable:
            return Accepted(owner, parameters, open=True)
        if kwargs_name is None:
            break  # a closed signature: the parents see only what this one passes them
        if not _forwards_to_super(function, method, kwargs_name):
            return Accepted(owner, parameters, open=True)
    return Accepted(owner, parameters)


def _own_parameters(function: Any, into: dict[str, Parameter], own: bool) -> tuple[str | None, bool]:
    """Add ``function``'s keyword parameters to ``into``; return (its **kwargs name, whether unreadable)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None, True
    hints = _type_hints(function)
    kwargs_name = None
    for index, parameter in enumerate(signature.parameters.values()):
        if index == 0 and parameter.name in ("self", "cls"):
            continue
        if parameter.kind is parameter.VAR_KEYWORD:
            kwargs_name = parameter.name
        elif parameter.kind in (parameter.VAR_POSITIONAL, parameter.POSITIONAL_ONLY):
            continue
        elif parameter.name not in into:
            annotation = hints.get(parameter.name, _EMPTY if isinstance(parameter.annotation, str) else parameter.annotation)
            into[parameter.name] = Parameter(parameter.name, annotation, required=own and parameter.default is _EMPTY)
    if kwargs_name is not None and not inspect.isfunction(inspect.unwrap(function)):
        return kwargs_name, True  # a builtin or C-level __init__: nothing to read
    return kwargs_name, False


def _type_hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(inspect.unwrap(function))
    except Exception:  # a forward reference that does not resolve at run time: that parameter is unchecked
        return {}


def _forwards_to_super(function: Any, method: str, kwargs_name: str) -> bool:
    """Whether ``function``'s source calls ``super().<method>(..., **kwargs_name)``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    except (OSError, TypeError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super"):
            continue
        if any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwargs_name for k in node.keywords):
            return True
    return False


# ---- values against annotations ------------------------------------------------------------
def type_verdict(annotation: Any, value: Any, from_command_line: bool = False) -> Verdict:
    """Whether ``value`` (as YAML gave it) can be ``annotation``: "refuse" only when it surely cannot.

    A command-line value is text to jsonargparse, so wherever ``str`` is accepted it is too.

    Example:
        >>> type_verdict(int | None, "four"), type_verdict(int | None, "4"), type_verdict(dict, "x")
        ('refuse', 'accept', 'unknown')
    """
    if annotation is _EMPTY or annotation is Any:
        return "unknown"
    if isinstance(value, Mapping) and "class_path" in value:
        return "unknown"  # an object to build: jsonargparse resolves the class
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [type_verdict(member, value, from_command_line) for member in typing.get_args(annotation)]
        if "accept" in verdicts:
            return "accept"
        return "refuse" if all(v == "refuse" for v in verdicts) else "unknown"
    if origin is Literal:
        return "accept" if any(value == choice and type(value) is type(choice) for choice in typing.get_args(annotation)) else "refuse"
    if annotation is type(None):
        return "accept" if value is None else "refuse"
    if annotation is str and from_command_line:
        return "accept"  # jsonargparse keeps the text when YAML's reading of it does not fit
    check = _SCALAR_CHECKS.get(annotation)
    if check is not None:
        return check(value)
    if annotation in (list, tuple) or origin in (list, tuple, Sequence):
        if isinstance(value, Mapping):
            return "refuse"
        return "accept" if isinstance(value, (list, tuple)) and origin is None else "unknown"  # items unchecked
    if annotation is Callable or origin is Callable:
        return "refuse" if isinstance(value, Mapping) else "unknown"
    return "unknown"


def _int(value: Any) -> Verdict:
    if isinstance(value, bool) or isinstance(value, (float, Mapping, list)):
        return "refuse"  # jsonargparse refuses 4.0 and true for an int as well
    if isinstance(value, int):
        return "accept"
    if isinstance(value, str):
        return "accept" if _parses(int, value) else "refuse"
    return "unknown"


def _float(value: Any) -> Verdict:
    if isinstance(value, (Mapping, list)):
        return "refuse"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "accept"
    if isinstance(value, str):
        return "accept" if _parses(float, value) else "refuse"  # YAML's 1e-3 is a string; jsonargparse reads it
    return "unknown"


def _str(value: Any) -> Verdict:
    if isinstance(value, str):
        return "accept"
    return "refuse" if isinstance(value, (Mapping, list)) else "unknown"


def _bool(value: Any) -> Verdict:
    if isinstance(value, bool):
        return "accept"
    return "refuse" if isinstance(value, (Mapping, list)) else "unknown"


def _parses(kind: type, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


_SCALAR_CHECKS: dict[Any, Callable[[Any], Verdict]] = {int: _int, float: _float, str: _str, bool: _bool}


def describe_type(annotation: Any) -> str:
    """The annotation as a config author reads it: ``int | null``, ``'strict', 'rescale'``.

    Example:
        >>> describe_type(int | None)
        'int | null'
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(dict.fromkeys(describe_type(member) for member in typing.get_args(annotation)))
    if origin is Literal:
        return ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return ", ".join(repr(member.name) for member in annotation)
    if origin is not None or annotation is Callable:
        return str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return qualified_name(annotation) if isinstance(annotation, type) else str(annotation)
