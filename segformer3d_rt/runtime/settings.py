"""Typed settings: each command's config is a dataclass whose fields say everything about a setting once.

A field made with :func:`setting` carries its help text, its choices, its bounds and how its default reads; its
annotation is its type (``batch_size: int``, ``show: bool``, ``input_size: tuple[int, int] | None``). From that:

- :func:`check_settings` checks values from a preset file, from flags or from Python against the annotations and
  the bounds, with one-line errors naming the setting the way its caller names it (``where(key)``: "'alpha'",
  "--alpha", "'alpha' in 'fast.toml'");
- the command line (``cli.py``) generates each command's flags from the same fields (help, choices, default
  shown), so no setting is written down twice. Config code never knows flag names: the CLI passes ``where``.

TOML gives real booleans, so ``show = "false"`` is an error rather than a true value. A field with ``size=LIMIT``
is an H x W size: "HxW" text is accepted too, and each side is bounded.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .sizes import check_size, parse_size

__all__ = ["Spec", "check_settings", "describe_type", "from_text", "quoted", "setting", "spec_of"]

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Spec:
    """What a setting is, beside its type and default (the dataclass field holds those)."""

    help: str = ""
    choices: tuple[Any, ...] | None = None  # allowed values (each item, for a tuple of them)
    low: float | None = None  # bounds of a number (of each item, for a tuple of numbers)
    high: float | None = None
    low_open: bool = False  # low itself is not allowed (lr > 0)
    size: int | None = None  # an H x W size (or a tuple of them), each side at most this
    default_text: str | None = None  # how the default reads in --help ("the checkpoint's"), when not its value
    flag: str | None = None  # the long flag when it is not --field-name
    short: str | None = None  # a one-letter flag ("-o")
    metavar: str | tuple[str, ...] | None = None
    positional: bool = False  # a positional argument of the command
    repeat: bool = False  # a list flag given several times (--data A --data B)
    commas: bool = False  # a list flag whose items may also be comma-separated (--precision fp32,bf16)
    cli: bool = True  # False: set by presets or Python only, no flag
    group: str | None = None  # the --help section
    required: bool = False  # a flag the command cannot do without (-o for a command that writes one file)
    optional_value: str | None = None  # the flag may be given without a value, meaning this (--json: "-")
    aliases: tuple[str, ...] = ()  # further flags for the same setting (--batch-size for --batch)


def setting(default: Any = _MISSING, **spec: Any) -> Any:
    """A dataclass field with its :class:`Spec` (``help=...`` and the rest as keywords)."""
    meta = {"setting": Spec(**spec)}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata.get("setting") or Spec(size=f.metadata.get("size"))


def quoted(key: str) -> str:
    """How a setting is named where no flag or file is involved (a config built in Python)."""
    return f"'{key}'"


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


def _coerce(tp: Any, value: Any, size: int | None = None) -> Any:
    args = _optional_args(tp)
    if args is not None:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, size)
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
        return [_coerce(inner[0], v, size) for v in value]
    if origin is tuple:
        if len(inner) == 2 and inner[1] is Ellipsis:
            if isinstance(value, str):  # one item where a list is expected (data = "synthetic")
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise _Mismatch
            return tuple(_coerce(inner[0], v, size) for v in value)
        if size is not None and isinstance(value, str):
            try:
                return parse_size(value, limit=size)
            except UserError:
                raise _Mismatch from None
        if not isinstance(value, (list, tuple)) or len(value) != len(inner):
            raise _Mismatch
        return tuple(_coerce(t, v) for t, v in zip(inner, value))
    return value  # a type this table does not describe: left to the config's own validation


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _numbers(item)]
    return []


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_spec(spec: Spec, value: Any, name: str) -> None:
    """Bounds and choices, after the type is right (None is never checked: it means "not set")."""
    if value is None:
        return
    if spec.choices is not None:
        for item in _items(value):
            if item not in spec.choices:
                raise UserError(f"unknown {name} '{item}'; choose one of {', '.join(map(str, spec.choices))}")
    if spec.low is None and spec.high is None:
        return
    for v in _numbers(value):
        too_low = spec.low is not None and (v <= spec.low if spec.low_open else v < spec.low)
        too_high = spec.high is not None and v > spec.high
        if too_low or too_high:
            raise UserError(f"{name} must be {_range_text(spec)}, not {v:g}")


def _range_text(spec: Spec) -> str:
    low = None if spec.low is None else (f"more than {spec.low:g}" if spec.low_open else f"at least {spec.low:g}")
    high = None if spec.high is None else f"at most {spec.high:g}"
    return " and ".join(t for t in (low, high) if t)


def check_settings(cls: type, values: Mapping[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """``values`` checked and converted against ``cls``'s annotations and specs (lists -> tuples, ints -> floats,
    one "out.mp4" -> ["out.mp4"], "HxW" -> (H, W) for size fields; bounds and choices). ``where(key)`` names a
    setting in errors. Raises UserError for an unknown key, a wrong type or a value out of bounds."""
    hints = typing.get_type_hints(cls)
    specs = {f.name: spec_of(f) for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            raise UserError(f"unknown setting {where(key)}")
        spec = specs[key]
        limit = spec.size
        if limit is not None and isinstance(value, str):
            converted = parse_size(value, limit=limit, what=where(key))
        else:
            try:
                converted = _coerce(hints[key], value, limit)
            except _Mismatch:
                wanted = "HxW text or [H, W] (e.g. \"256x512\")" if limit is not None else describe_type(hints[key])
                raise UserError(f"{where(key)} must be {wanted}, not {value!r}") from None
            if limit is not None and converted is not None:
                sizes = converted if converted and isinstance(converted[0], tuple) else [converted]
                for s in sizes:
                    check_size(s, limit=limit, what=where(key))
        _check_spec(spec, converted, where(key))
        out[key] = converted
    return out


def check_config(cfg: Any, where: Callable[[str], str] = quoted) -> None:
    """Every field of a dataclass instance checked in place (a config built in Python, or after defaults)."""
    typed = check_settings(type(cfg), {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, where)
    for name, value in typed.items():
        setattr(cfg, name, value)


# ------------------------------------------------------------------------------------- text from a command line

def _text_item(tp: Any, text: str, spec: Spec, name: str) -> Any:
    """One command-line word as a value of ``tp`` (checked again by check_settings)."""
    args = _optional_args(tp)
    if args is not None:
        kinds = [a for a in args if a is not type(None)]
        for kind in kinds:
            try:
                return _text_item(kind, text, spec, name)
            except UserError:
                if kind is kinds[-1]:
                    raise
        return text
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{name} must be an integer, not '{text}'") from None
    if tp is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UserError(f"{name} must be a number, not '{text}'")
        return value
    if typing.get_origin(tp) is tuple and spec.size is not None:
        return parse_size(text, limit=spec.size, what=name)
    if typing.get_origin(tp) is tuple:  # "X,Y" for a pair of numbers
        inner = typing.get_args(tp)
        parts = [p.strip() for p in text.split(",")]
        wanted = spec.metavar if isinstance(spec.metavar, str) else f"{len(inner)} comma-separated values"
        if len(parts) != len(inner):
            raise UserError(f"{name} wants {wanted}, not '{text}'")
        try:
            return tuple(_text_item(t, p, Spec(), name) for t, p in zip(inner, parts))
        except UserError:
            raise UserError(f"{name} wants {wanted}, not '{text}'") from None
    return text


def from_text(tp: Any, value: str | Sequence[str] | bool, spec: Spec, name: str) -> Any:
    """What argparse gave (a word, a list of words, a bool) -> the field's type."""
    if isinstance(value, bool):
        return value
    kinds = [a for a in (_optional_args(tp) or (tp,)) if a is not type(None)]
    inner_tp = kinds[0] if len(kinds) == 1 else tp  # X | None: as X; int | str: each tried in turn
    origin, inner = typing.get_origin(inner_tp), typing.get_args(inner_tp)
    is_list = origin is list or (origin is tuple and len(inner) == 2 and inner[1] is Ellipsis)
    if is_list:
        words = [value] if isinstance(value, str) else list(value)
        if spec.commas:
            words = [w.strip() for word in words for w in word.split(",") if w.strip()]
        conv = [_text_item(inner[0], w, spec, name) for w in words]
        return conv if origin is list else tuple(conv)
    if not isinstance(value, str):  # nargs=N: a fixed-length tuple of words
        return tuple(_text_item(t, w, Spec(), name) for t, w in zip(inner, value))
    return _text_item(inner_tp, value, spec, name)
