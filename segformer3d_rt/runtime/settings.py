"""Typed settings: values from a preset file or flags checked against a dataclass's field annotations.

The annotations are the one table of types (``batch_size: int``, ``show: bool``, ``input_size: tuple[int, int] |
None``); this module turns them into checks with one-line errors naming the setting and the type it wants.
TOML gives real booleans, so ``show = "false"`` is an error rather than a true value. A field's
``metadata={"size": LIMIT}`` marks an H x W size: "HxW" text is accepted too, and each side is bounded.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UserError
from .sizes import check_size, parse_size

__all__ = ["check_settings", "describe_type"]

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


class _Mismatch(Exception):
    """A value that does not fit its annotation (turned into one UserError line by the caller)."""


def _optional_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def describe_type(tp: Any) -> str:
    """'an integer', 'true or false', '[a number, a number]', 'a list of text', ... for error messages."""
    args = _optional_args(tp)
    if args is not None:
        return " or ".join(describe_type(a) for a in args if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)
        if len(inner) == 2 and inner[1] is Ellipsis:
            return f"a list of {describe_type(inner[0])}"
        return "[" + ", ".join(describe_type(a) for a in inner) + "]"
    if origin is list:
        return f"a list of {describe_type(typing.get_args(tp)[0])}"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(tp: Any, value: Any) -> Any:
    args = _optional_args(tp)
    if args is not None:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):  # not 0/1, not "false"
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    origin, inner = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        if isinstance(value, str):  # a single item where a list is expected (outputs = "out.mp4")
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_coerce(inner[0], v) for v in value]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(inner) == 2 and inner[1] is Ellipsis:
            return tuple(_coerce(inner[0], v) for v in value)
        if len(value) != len(inner):
            raise _Mismatch
        return tuple(_coerce(t, v) for t, v in zip(inner, value))
    return value  # a type this table does not describe: left to the config's own validation


def check_settings(cls: type, values: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """``values`` checked and converted against ``cls``'s annotations (lists -> tuples, ints -> floats, one
    "out.mp4" -> ["out.mp4"], "HxW" -> (H, W) for size fields). ``where(key)`` names a setting in errors (e.g.
    "'batch_size' in 'fast.toml'" or "--batch-size"). Raises UserError for an unknown key or a wrong type."""
    hints = typing.get_type_hints(cls)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            raise UserError(f"unknown setting {where(key)}")
        limit = meta[key].get("size")
        if limit is not None and isinstance(value, str):
            out[key] = parse_size(value, limit=limit, what=where(key))
            continue
        try:
            converted = _coerce(hints[key], value)
        except _Mismatch:
            wanted = "HxW text or [H, W] (e.g. \"256x512\")" if limit is not None else describe_type(hints[key])
            raise UserError(f"{where(key)} must be {wanted}, not {value!r}") from None
        if limit is not None and converted is not None:
            converted = check_size(converted, limit=limit, what=where(key))
        out[key] = converted
    return out
