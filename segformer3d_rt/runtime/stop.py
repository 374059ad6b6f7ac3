"""Ctrl-C or SIGTERM during a long loop (training, evaluation): finish the item under way, keep what was done.

    with StopRequest() as stop:
        for item in items:
            work(item)          # never cut in half: the signal only sets a flag
            if stop.requested:
                break

A second signal raises KeyboardInterrupt at once. An error raised after the first one is the interrupt's doing
(the same Ctrl-C reached the data workers, and the loader says they exited): it is logged and swallowed, so the
loop simply ends. Installed only on the main thread (elsewhere signals cannot be caught); the old handlers come
back on exit.
"""
from __future__ import annotations

import logging
import signal
import threading

__all__ = ["StopRequest"]

log = logging.getLogger(__name__)


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self.requested and exc_type is not None and issubclass(exc_type, Exception):
            log.debug("after the interrupt: %s", exc)
            return True
        return False
