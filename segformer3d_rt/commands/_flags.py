"""Command-line flags made from a config dataclass's fields (``runtime/settings.setting``), and back.

A field's annotation gives the kind of flag (a bool: ``--x/--no-x``; a list: repeatable; an H x W size: ``HxW``
text), its Spec the help text, choices, bounds and how the default reads; nothing about a setting is written a
second time here. :class:`Flags` remembers which flag stands for which field, so that an error about a setting
names the flag the user typed.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from ..runtime.settings import Spec, from_text, quoted, spec_of


def _default_text(f: dataclasses.Field, spec: Spec) -> str | None:
    if spec.default_text is not None:
        return spec.default_text
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if default in (None, (), [], ""):
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple) and len(default) == 2 and all(isinstance(v, int) for v in default) and spec.size:
        return f"{default[0]}x{default[1]}"
    if isinstance(default, tuple):
        return ",".join(f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v) for v in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def _is_bool(tp: Any) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return bool in args and all(a in (bool, type(None)) for a in args)


def _is_list(tp: Any) -> bool:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else [tp]
    origin, inner = typing.get_origin(args[0]), typing.get_args(args[0])
    return origin is list or (origin is tuple and len(inner) == 2 and inner[1] is Ellipsis)


class Flags:
    """The flags of one command: added to its parser from config fields; ``where`` names a field by its flag."""

    def __init__(self) -> None:
        self.flag: dict[str, str] = {}  # field name -> the flag (or the positional's name)
        self._types: dict[str, tuple[Any, Spec]] = {}

    def add(self, parser: argparse.ArgumentParser, cls: type, names: Iterable[str] | None = None,
            rename: dict[str, str] | None = None, defaults: dict[str, Any] | None = None,
            required: tuple[str, ...] = (), groups: dict[str, Any] | None = None) -> None:
        """A flag per field of ``cls`` (those in ``names``, in their order, when given; else every field with a
        flag). ``rename``: field -> flag where this command names it otherwise; ``defaults``: field -> a default
        this command shows and applies instead of the field's; ``required``: fields this command cannot do
        without."""
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        groups = groups if groups is not None else {}
        for name in (names if names is not None else [n for n, f in fields.items() if spec_of(f).cli]):
            f, spec, tp = fields[name], spec_of(fields[name]), hints[name]
            default = (defaults or {}).get(name)
            shown = _default_text(f, spec) if default is None else str(default)
            help_text = spec.help + (f" (default: {shown})" if shown and spec.help else "")
            if spec.choices is not None and len(spec.choices) <= 12:
                help_text += f"; one of: {', '.join(map(str, spec.choices))}"
            target = parser
            if spec.group and not spec.positional:
                if spec.group not in groups:
                    groups[spec.group] = parser.add_argument_group(spec.group)
                target = groups[spec.group]
            kw: dict[str, Any] = {"help": help_text.replace("%", "%%"), "dest": name, "default": None}
            if spec.metavar is not None:
                kw["metavar"] = spec.metavar
            flag = (rename or {}).get(name) or spec.flag or "--" + name.replace("_", "-")
            if spec.positional:
                del kw["dest"]
                needed = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                nargs = ("+" if needed or name in required else "*") if _is_list(tp) else (
                    None if needed or name in required else "?")
                target.add_argument(name, nargs=nargs, **kw)
                self.flag[name] = name.upper()
            else:
                opts = [o for o in (spec.short, flag) if o]
                if _is_bool(tp):
                    kw["action"] = argparse.BooleanOptionalAction
                    kw.pop("metavar", None)
                elif _is_list(tp) and spec.repeat:
                    kw["action"] = "append"
                elif isinstance(spec.metavar, tuple):
                    kw["nargs"] = len(spec.metavar)
                if spec.required or name in required:
                    kw["required"] = True
                if spec.optional_value is not None:
                    kw["nargs"], kw["const"] = "?", spec.optional_value
                target.add_argument(*opts, *spec.aliases, **kw)
                self.flag[name] = flag
            self._types[name] = (tp, spec)
            if default is not None:
                parser.set_defaults(**{f"_default_{name}": default})

    def where(self, key: str) -> str:
        return self.flag.get(key, quoted(key))

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The settings the user gave (typed from their text), and this command's own defaults for the rest."""
        out: dict[str, Any] = {}
        for name, (tp, spec) in self._types.items():
            raw = getattr(args, name, None)
            if raw is None:
                raw = getattr(args, f"_default_{name}", None)
                if raw is None:
                    continue
                if not isinstance(raw, str):
                    out[name] = raw
                    continue
            out[name] = from_text(tp, raw, spec, self.where(name))
        return out



def make_config(cls: type, values: dict[str, Any], where: Callable[[str], str]) -> Any:
    """``cls(**values)`` once the values pass the field checks, errors naming each setting by ``where``."""
    from ..errors import UserError
    from ..runtime.settings import check_settings

    typed = check_settings(cls, values, where)
    try:
        cfg = cls(**typed)
    except TypeError as e:
        raise UserError(f"bad settings: {e}") from None
    check = getattr(cfg, "check", None)
    if callable(check):
        check(where)
    return cfg
