"""Errors meant for people.

Anything raised as a :class:`UserError` is reported by the CLI as one line on stderr
with exit code 2 (bad input: missing file, corrupt checkpoint, unknown camera, ...).
Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message is shown as is, without a traceback."""

    exit_code = 2


class CheckpointError(UserError):
    """A weights file that cannot be loaded exactly (wrong format, keys or shapes)."""


class SourceError(UserError):
    """A video/camera/stream/image source that cannot be opened or read."""


class SinkError(UserError):
    """An output that cannot be written (unwritable path, unknown codec, ...)."""


def reason(error: BaseException) -> str:
    """A short human reason for an OS (or any) error: its strerror without the repeated file name and errno."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).strip().rstrip(".")
