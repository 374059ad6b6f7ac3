"""Ctrl-C and SIGTERM while a pipeline runs (shared by `run` and `bench --source`)."""
from __future__ import annotations

import signal
import threading
from typing import Any


class Signals:
    """First Ctrl-C / SIGTERM: stop capture and drain. Second: abort everything. Installed only on the main
    thread (elsewhere signals cannot be caught); ``Signals(pipeline)`` is what ``session.execute`` holds."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.count = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        self.pipeline.interrupted = True
        if self.count == 1:
            self.pipeline.request_stop()
        else:
            self.pipeline.abort.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
