"""The one check of output paths: can a directory hold new files, can a file be written there later.

Both look for the nearest existing ancestor of the path: that is where a file or directory would be
created, so that is what must be a writable directory.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import SinkError, UserError, reason

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here (see OutputLock)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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
    streamed = [what for what, out in outputs if str(out) == STDOUT]
    if len(streamed) > 1:
        raise UserError(f"the {streamed[0]} and the {streamed[1]} both go to standard output ('-'); give one of "
                        "them a file")
    for what, out in outputs:
        if str(out) == STDOUT:
            continue
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


STDOUT = "-"  # as an output path: standard output (a JSON report, or a fragmented MP4 stream)
OVERWRITE_FLAG = "--overwrite"  # the one policy: an existing output is replaced only when the user says so


def no_stdout(path: str | Path, what: str) -> None:
    """One line for an output that cannot go to standard output ('-' means it wherever a path is asked for)."""
    if str(path) == STDOUT:
        raise UserError(f"'-' (standard output) cannot take {what}; give a path")


def check_new(outputs: list[tuple[str, str | Path]], overwrite: bool) -> None:
    """Refuse (one line naming the flag) an output that already exists, unless ``overwrite``: a file, or a folder
    that holds anything. Inputs are never written whatever it says (:func:`check_outputs`)."""
    if overwrite:
        return
    for what, out in outputs:
        if str(out) == STDOUT:
            continue
        p = Path(out)
        if p.is_dir():
            if any(p.iterdir()):
                raise UserError(f"{what} '{out}' is a folder that already holds files; give {OVERWRITE_FLAG} to "
                                "write into it anyway, or a new or empty folder")
        elif os.path.lexists(p):
            raise UserError(f"{what} '{out}' already exists; give {OVERWRITE_FLAG} to replace it")


def partial_path(path: str | Path) -> Path:
    """The name the output checks keep free beside an output: ``NAME.partial`` (what earlier versions wrote to;
    files are now written to :func:`create_temp`'s names of their own, which never exist before)."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


# ----------------------------------------------------------------------------------------------
# An output being written is owned by its run: a temporary name nobody else has (two runs never share one), and
# an advisory lock that a second run aiming at the same output finds taken before it does any work.

def create_temp(path: str | Path) -> tuple[Path, int]:
    """A new, empty file beside ``path`` that belongs to this run alone: ``NAME.<pid>-<random>.partial``, created
    exclusively (never an existing file, never another run's). Returns (its path, a descriptor open on it for
    writing; the caller closes it). OSError when the folder cannot hold it."""
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        temp = p.with_name(f"{p.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
        try:
            return temp, os.open(temp, flags, 0o644)
        except FileExistsError:  # 32 random bits taken already: draw again
            continue


def still_there(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed, its folder not removed or replaced)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return _identity(path) == (st.st_dev, st.st_ino)


def lock_path(path: str | Path) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it, in its folder resolved (two names of one folder, one
    lock; the name itself is not resolved: it is the name that is replaced when the output is complete)."""
    p = Path(path)
    if p.name in ("", ".", ".."):  # a folder output named by "." or "..": lock it by its real name
        p = Path(os.path.realpath(p))
    else:
        p = Path(os.path.realpath(p.parent)) / p.name
    return p.with_name(f".{p.name}.lock")


class OutputLock:
    """An advisory lock (``fcntl.flock``) on ``.NAME.lock`` beside an output, held from before the first frame
    until the output is final, so that a second run aiming at the same output is refused before any work
    (SinkError, one line naming the run that holds it). The lock file holds the holder's pid and is removed on
    release; after a crash (``kill -9``, a power cut) the kernel has released the lock, and the file left behind is
    simply taken over. Where there are no flock locks (Windows, some network file systems) outputs are not locked
    (one debug line)."""

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.path = lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; SinkError when another run holds it, OSError when the lock file cannot be made."""
        if fcntl is None:
            log.debug("no advisory locks on this system: '%s' is not locked", self.output)
            return
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                raise SinkError(f"cannot write '{self.output}': another run is writing it"
                                + (f" (pid {holder})" if holder.isdigit() else "")
                                + "; wait for it to finish or choose another output name") from None
            except OSError as e:  # no flock on this file system: write unlocked rather than not at all
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                log.debug("cannot lock '%s' (%s): writing it unlocked", self.output, reason(e))
                return
            if still_there(self.path, fd):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
            else:  # its previous holder removed the file between our open and our lock: lock the new one
                os.close(fd)

    def release(self) -> None:
        """Remove the lock file and let go (idempotent): the file goes first, while still held, so that a run
        locking it meanwhile notices (``still_there``) and locks the next one."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if still_there(self.path, fd):
                self.path.unlink()
        except OSError as e:
            log.debug("cannot remove '%s': %s", self.path, reason(e))
        finally:
            os.close(fd)


def claim_output(path: str | Path) -> OutputLock:
    """Lock ``path`` for this run (see :class:`OutputLock`): SinkError, one line, when another run is writing it
    or the lock cannot be made there."""
    lock = OutputLock(path)
    try:
        lock.acquire()
    except OSError as e:
        raise SinkError(f"cannot write '{path}': {reason(e)}") from e
    return lock


def check_json_output(path: str | Path, what: str, inputs: list[tuple[str, str | Path]],
                      outputs: list[tuple[str, str | Path]] = (), overwrite: bool = False) -> None:
    """Before any work: refuse a JSON output (``what``, e.g. "results JSON") that would land on an input or on
    another output, that exists (unless ``overwrite``), or that cannot be written there; so a finished run never
    ends in a lost report. ``-``: standard output."""
    check_outputs(inputs, [(what, path), *outputs], {str(Path(path)): [partial_path(path)]})
    if str(path) == STDOUT:
        return
    check_new([(what, path)], overwrite)
    if not writable_file(path):
        raise UserError(f"cannot write the {what} to '{path}': not a writable location")


def write_json(path: str | Path, data: Any, what: str, default: Callable[[Any], Any] = str) -> None:
    """Write ``data`` as JSON through a temporary file of this run's own (:func:`create_temp`) renamed into place:
    a reader never sees half a file, two runs never write into one file, and a failure leaves nothing behind but
    one line naming ``what`` (e.g. "stats"). ``default``: how values JSON does not know are written (``float``
    keeps numpy scalars numbers). ``-``: standard output."""
    if str(path) == STDOUT:
        try:
            sys.stdout.write(json.dumps(data, indent=2, default=default) + "\n")
            sys.stdout.flush()
        except OSError as e:
            raise UserError(f"cannot write the {what} to standard output: {e.strerror or e}") from None
        return
    p = Path(path)
    tmp: Path | None = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, default=default)
        tmp, fd = create_temp(p)
        with open(fd, "w") as f:
            f.write(text)
        tmp.replace(p)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {what} to '{path}': {e.strerror or e}") from None
