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
    kwargs_name, unreadable = _own_parameters(target, parameters, own=True, bound=False)
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
    read: set[str] = set()  # `x = kwargs.pop("x", 1)`: keys a class takes though no parameter names them
    for klass in cls.__mro__:
        if method not in vars(klass) or klass is object:
            continue
        function = vars(klass)[method]
        kwargs_name, unreadable = _own_parameters(function, parameters, own, bound=not isinstance(function, staticmethod))
        own = False
        if unreadable:
            return Accepted(owner, parameters, open=True)
        if kwargs_name is None:
            break  # a closed signature: the parents see only what this one passes them
        names = _kwargs_read_by_name(function, method, kwargs_name)
        if names is None:
            return Accepted(owner, parameters, open=True)
        read |= names
    for name in sorted(read):  # after the parents', so a parent's annotation of the same name is kept
        parameters.setdefault(name, Parameter(name, _EMPTY, required=False))
    return Accepted(owner, parameters)


def _own_parameters(function: Any, into: dict[str, Parameter], own: bool, bound: bool) -> tuple[str | None, bool]:
    """Add ``function``'s keyword parameters to ``into``; return (its **kwargs name, whether unreadable).

    ``bound``: a method, whose first parameter is the instance whatever it is called.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None, True
    hints = _type_hints(function)
    kwargs_name = None
    for index, parameter in enumerate(signature.parameters.values()):
        if index == 0 and bound and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
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


_KWARGS_READS = frozenset({"get", "pop", "setdefault"})


def _kwargs_read_by_name(function: Any, method: str, kwargs_name: str) -> set[str] | None:
    """The keys ``function`` reads from its ``**kwargs`` by name, when it hands the rest to ``super().<method>``; else None.

    None (the class is then open) when the source cannot be read, nothing is handed to
    ``super()``, or the dict is used in a way that could consume any key: iterated, stored,
    ``.items()``, read with a key that is not a literal. Handing it to a helper function
    (``check(kwargs)``, ``dict(kwargs)``) is taken as the helper reading its parent's keys, as
    flashdist's own Trainer does (a known limit: a helper that consumed other keys would be missed).
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    except (OSError, TypeError, SyntaxError):
        return None
    forwarded: set[int] = set()  # ids of the Name nodes in `super().<method>(**kwargs)`
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super"):
            continue
        forwarded |= {id(k.value) for k in node.keywords
                      if k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwargs_name}
    if not forwarded:
        return None
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    read: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == kwargs_name) or id(node) in forwarded:
            continue
        parent = parents.get(id(node))
        if isinstance(parent, ast.Assign) and node in parent.targets:
            continue  # `kwargs = helper(dict(kwargs))`: the helper's call is judged on its own
        if isinstance(parent, ast.Call) and node in parent.args:
            continue  # handed to a helper (see above)
        key = _literal_key(node, parent, parents)
        if key is None:
            return None
        if key:
            read.add(key)
    return read


def _literal_key(node: ast.Name, parent: Any, parents: dict[int, Any]) -> str | None:
    """The key of ``kwargs["x"]``, ``kwargs.get("x")`` (``.pop``, ``.setdefault``), ``"x" in kwargs``; "" for a write; else None."""
    if isinstance(parent, ast.Subscript) and isinstance(parent.slice, ast.Constant) and isinstance(parent.slice.value, str):
        return "" if isinstance(parent.ctx, ast.Store) else parent.slice.value
    if isinstance(parent, ast.Attribute) and parent.attr in _KWARGS_READS:
        call = parents.get(id(parent))
        first = call.args[0] if isinstance(call, ast.Call) and call.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
        return None
    if isinstance(parent, ast.Compare) and isinstance(parent.left, ast.Constant) and isinstance(parent.left.value, str):
        return parent.left.value
    return None


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
        choices = typing.get_args(annotation)
        if any(value == choice for choice in choices):
            return "accept"
        if isinstance(value, str) and not all(isinstance(choice, str) for choice in choices):
            return "unknown"  # jsonargparse converts "16" to a Literal[16]'s int
        return "refuse"
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


def builds_only_typed_objects(annotation: Any) -> bool:
    """Whether jsonargparse builds a ``class_path`` mapping under ``annotation`` as the class it names, with its arguments.

    Under ``Any``, ``dict`` or no annotation it keeps the mapping as it is; under a ``Callable``
    (``OptimizerCallable``) the callable supplies some arguments (``params``) itself: flashdist
    checks neither.

    Example:
        >>> builds_only_typed_objects(list[int] | None), builds_only_typed_objects(dict), builds_only_typed_objects(Any)
        (True, False, False)
    """
    if annotation in (_EMPTY, Any, object, dict, list, tuple, Callable) or isinstance(annotation, (str, typing.TypeVar)):
        return False
    if isinstance(annotation, type) and issubclass(annotation, Mapping):
        return False
    origin = typing.get_origin(annotation)
    if origin in (dict, Mapping, Callable) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return False
    return all(builds_only_typed_objects(argument) for argument in typing.get_args(annotation) if argument is not Ellipsis)


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
