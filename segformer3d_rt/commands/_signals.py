"""Ctrl-C, SIGTERM and SIGHUP while a pipeline runs (shared by `run` and `bench --source`).

SIGHUP is what a closed terminal or SSH session sends: it finalises the outputs like Ctrl-C, and what was
written to that terminal goes to /dev/null from then on (writes to a hung-up terminal fail, and a failing
summary must not cost the stats file).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "Signals", "setup_interrupts"]

# every signal that means "stop, but keep what was done"; SIGHUP does not exist on Windows
STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                                      if hasattr(signal, name))


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Signals:
    """First signal: stop capture and drain. Second: abort everything (what is in flight is abandoned and
    counted; the sinks still finalise what was written). Installed only on the main thread (elsewhere signals
    cannot be caught); ``Signals(pipeline)`` is what ``session.execute`` holds while the stages run and the
    sinks finalise."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.count = 0
        self._old: dict[int, Any] = {}
        self._ttys: list[int] = []

    def __enter__(self) -> Signals:
        if _on_main_thread():
            # known now: after a hang-up isatty() itself fails on the dead terminal
            self._ttys = [fd for fd in (1, 2) if _isatty(fd)]
            for sig in _caught():
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            _silence(self._ttys)
        self.count += 1
        self.pipeline.interrupted = True
        if self.count == 1:
            self.pipeline.request_stop()
        else:
            self.pipeline.abort.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    if signum == getattr(signal, "SIGHUP", None):
        _silence([fd for fd in (1, 2) if _isatty(fd)])
    raise KeyboardInterrupt


@contextlib.contextmanager
def setup_interrupts() -> Iterator[None]:
    """While a run is set up (weights, source, outputs) SIGTERM and SIGHUP end it the way Ctrl-C does
    (KeyboardInterrupt), so the command can still say so and write its stats; :class:`Signals` takes over
    once the stages run."""
    if not _on_main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise_interrupt) for sig in _caught() if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _caught() -> list[int]:
    """The stop signals to catch: SIGHUP only where it is not ignored (under ``nohup`` the run carries on after
    the terminal closes, as the user asked)."""
    hup = getattr(signal, "SIGHUP", None)
    return [sig for sig in STOP_SIGNALS if not (sig == hup and signal.getsignal(sig) is signal.SIG_IGN)]


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
