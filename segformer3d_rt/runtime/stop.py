"""The one way a command is stopped by a signal: Ctrl-C, SIGTERM and SIGHUP mean "stop, but keep what was done".

    with StopRequest() as stop:
        for item in items:
            work(item)          # never cut in half: the signal only sets a flag
            if stop.requested:
                break

The first signal calls ``first`` (default: set ``requested``); a second calls ``second`` (default: raise
KeyboardInterrupt at once). A pipeline passes its own (drain, then abort); the set-up of a run raises at the
first (``at_once``). SIGHUP is what a closed terminal or SSH session sends: it is handled like the others, and
what was written to that terminal goes to /dev/null from then on (writes to a hung-up terminal fail, and a
failing summary must not cost the outputs); under ``nohup`` (SIGHUP ignored) it stays ignored. Installed only
on the main thread (elsewhere signals cannot be caught); the old handlers come back on exit.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable

__all__ = ["STOP_SIGNALS", "StopRequest", "loader_worker_exit"]

log = logging.getLogger(__name__)

# every signal that means "stop, but keep what was done"; SIGHUP does not exist on Windows
STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                                      if hasattr(signal, name))
_HUP = getattr(signal, "SIGHUP", None)


class StopRequest:
    """``first`` / ``second``: what the first and any later signal do. ``at_once``: the first raises
    KeyboardInterrupt (nothing is under way that could finish). ``signals``: which to catch (default all of
    :data:`STOP_SIGNALS`). ``expected``: an exception that the signal itself causes after the first (the same
    Ctrl-C reaches a data loader's workers, which exit, and the loader says so): logged and swallowed on exit, so
    the loop simply ends; nothing else is ever swallowed."""

    def __init__(self, first: Callable[[], None] | None = None, second: Callable[[], None] | None = None,
                 at_once: bool = False, signals: tuple[int, ...] | None = None,
                 expected: Callable[[BaseException], bool] | None = None) -> None:
        self.requested = False
        self.count = 0
        self._first, self._second, self._at_once = first, second, at_once
        self._signals = STOP_SIGNALS if signals is None else signals
        self._expected = expected
        self._old: dict[int, object] = {}
        self._ttys: list[int] = []

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            # known now: after a hang-up isatty() itself fails on the dead terminal
            self._ttys = [fd for fd in (1, 2) if _isatty(fd)]
            for sig in self._signals:
                if sig == _HUP and signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # nohup: the run carries on after the terminal closes, as the user asked
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        if signum == _HUP:
            _silence(self._ttys)
        self.count += 1
        if self._at_once:
            raise KeyboardInterrupt
        if self.count > 1:
            if self._second is None:
                raise KeyboardInterrupt
            self._second()
            return
        self.requested = True
        if self._first is not None:
            self._first()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self.requested and exc is not None and self._expected is not None and self._expected(exc):
            log.debug("after the interrupt: %s", exc)
            return True
        return False


def loader_worker_exit(exc: BaseException) -> bool:
    """torch's DataLoader saying its worker processes died, or the pipe to them broke mid-batch: what a Ctrl-C to
    the process group does to them."""
    if isinstance(exc, (EOFError, ConnectionError)):
        return True
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _silence(fds: list[int]) -> None:
    """Point ``fds`` (the terminal's) at /dev/null: the terminal is gone."""
    if not fds:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)
