"""The one check of output paths: can a directory hold new files, can a file be written there later.

Both look for the nearest existing ancestor of the path: that is where a file or directory would be
created, so that is what must be a writable directory.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import reason


def existing_ancestor(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def writable_dir(directory: Path) -> str | None:
    """Create ``directory`` (and its parents) if missing; why it cannot hold new files, or None."""
    existing = existing_ancestor(directory)
    if not existing.is_dir():
        return f"'{existing}' is not a directory"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create directory '{directory}': {reason(e)}"
    return None


def writable_file(path: str | Path) -> bool:
    """Whether a file can be written at ``path`` later (nothing is created now): not a directory, and its
    nearest existing ancestor a directory we may write into."""
    p = Path(path)
    probe = existing_ancestor(p.parent)
    return not p.is_dir() and probe.is_dir() and os.access(probe, os.W_OK)
