"""The one check of output paths: can a directory hold new files, can a file be written there later.

Both look for the nearest existing ancestor of the path: that is where a file or directory would be
created, so that is what must be a writable directory.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError, reason


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


# ----------------------------------------------------------------------------------------------
# Outputs never land on what the user gave. Paths are compared resolved (symlinks, "..") and, where both
# exist, by (device, inode): a hard link or a bind mount of an input is that input.

def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file or directory (either may not exist yet)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    ia, ib = _identity(Path(a)), _identity(Path(b))
    return ia is not None and ia == ib


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies anywhere below it (resolved; by inode for existing ancestors)."""
    real, top = os.path.realpath(path), os.path.realpath(folder)
    if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
        return True
    target = _identity(Path(folder))
    if target is None:
        return False
    probe = Path(real)
    while True:
        if _identity(probe) == target:
            return True
        if probe == probe.parent:
            return False
        probe = probe.parent


def check_outputs(inputs: list[tuple[str, str | Path]], outputs: list[tuple[str, str | Path]],
                  side_files: dict[str, list[Path]] | None = None) -> None:
    """Refuse (UserError, one line) an output that is an input, lies inside an input folder, or is another
    output. ``inputs``/``outputs``: (what, path), e.g. ("source", "in.mp4"), ("stats JSON", "s.json");
    ``side_files``: further files an output writes first (``out.mp4.partial``), by output path."""
    existing_inputs = [(what, Path(p)) for what, p in inputs if p and os.path.lexists(p)]
    seen: list[tuple[str, Path]] = []
    for what, out in outputs:
        out = Path(out)
        for in_what, src in existing_inputs:
            for written in [out, *(side_files or {}).get(str(out), [])]:
                if same_file(written, src) and src.is_dir():
                    raise UserError(f"{what} '{out}' is the {in_what} folder '{src}'; write it elsewhere")
                if same_file(written, src):
                    raise UserError(f"{what} '{out}' would overwrite the {in_what} '{src}'; "
                                    "choose another output name")
            if src.is_dir() and inside(out, src):
                raise UserError(f"{what} '{out}' is inside the {in_what} folder '{src}'; write it elsewhere")
        for other_what, other in seen:
            if same_file(out, other):
                same = "given twice" if other_what == what else f"both the {other_what} and the {what}"
                raise UserError(f"output '{out}' is {same}; give each output its own name")
        seen.append((what, out))


def partial_path(path: str | Path) -> Path:
    """Where a file is written before it is renamed into place: ``NAME.partial``."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def check_json_output(path: str | Path, what: str, inputs: list[tuple[str, str | Path]],
                      outputs: list[tuple[str, str | Path]] = ()) -> None:
    """Before any work: refuse a JSON output (``what``, e.g. "results JSON") that would land on an input or on
    another output, or that cannot be written there; so a finished run never ends in a lost report."""
    check_outputs(inputs, [(what, path), *outputs], {str(Path(path)): [partial_path(path)]})
    if not writable_file(path):
        raise UserError(f"cannot write the {what} to '{path}': not a writable location")


def write_json(path: str | Path, data: Any, what: str, default: Callable[[Any], Any] = str) -> None:
    """Write ``data`` as JSON through ``NAME.partial`` renamed into place: a reader never sees half a file, and a
    failure leaves nothing behind but one line naming ``what`` (e.g. "stats"). ``default``: how values JSON
    does not know are written (``float`` keeps numpy scalars numbers)."""
    p = Path(path)
    tmp = partial_path(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2, default=default))
        tmp.replace(p)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {what} to '{path}': {e.strerror or e}") from None
