"""JSON round trips of the frozen config dataclasses (tuples become lists and back), with
every value checked against its field's type."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, fields
from typing import Any, TypeVar, Union

T = TypeVar("T")


def config_to_dict(config: object) -> dict[str, Any]:
    """``asdict`` with tuples as lists, as JSON writes them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)``; ValueError naming unknown keys (``what``: e.g. "SEANet config")
    and values of the wrong type (``steps=2.5``, ``batch_size=true``, ``quantizer=5``):
    an int field takes only integers (not booleans), a float field numbers, a bool field
    only ``true``/``false``."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if not matches(value, hints[name]):
            raise ValueError(f"{what} {name} must be {describe(hints[name])}, got "
                             f"{value!r}")
    return cls(**data)


def matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-like ``value`` fits the annotation ``hint``; annotations this does
    not know are not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(matches, value, args))
        return all(matches(item, args[0] if args else Any) for item in value)
    if origin is dict:
        key, item = args or (Any, Any)
        return isinstance(value, dict) and all(
            matches(k, key) and matches(v, item) for k, v in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, dict))
    return True


def describe(hint: Any) -> str:
    """Words for an annotation in an error message."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args if arg is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
        return f"a list of {describe(args[0]) if args else 'values'}"
    if origin is dict:
        return (f"an object whose values are each {describe(args[1])}"
                if args and args[1] is not Any else "an object (a JSON mapping)")
    return getattr(hint, "__name__", str(hint))
