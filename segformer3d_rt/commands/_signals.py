"""Signals while a pipeline runs (shared by `run`, `attention`, `soak` and `bench --source`), from the one stop
mechanism (``runtime/stop.StopRequest``): the first signal stops capture and drains, a second aborts (what is in
flight is abandoned and counted; the sinks still finalise what was written)."""
from __future__ import annotations

import signal
from typing import Any

from ..runtime.stop import STOP_SIGNALS, StopRequest

__all__ = ["Signals", "setup_interrupts"]


def Signals(pipeline: Any) -> StopRequest:  # noqa: N802  (used like a class: Signals(pipeline) is a context)
    """What ``session.execute`` holds while the stages run and the sinks finalise."""
    def first() -> None:
        pipeline.interrupted = True
        pipeline.request_stop()

    def second() -> None:
        pipeline.interrupted = True
        pipeline.abort.set()
    return StopRequest(first, second)


def setup_interrupts() -> StopRequest:
    """While a run is set up (weights, source, outputs) SIGTERM and SIGHUP end it the way Ctrl-C does
    (KeyboardInterrupt), so the command can still say so and write its stats; :func:`Signals` takes over once
    the stages run."""
    return StopRequest(at_once=True, signals=tuple(s for s in STOP_SIGNALS if s != signal.SIGINT))
