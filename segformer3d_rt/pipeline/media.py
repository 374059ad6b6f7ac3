"""Small helpers that sources and sinks share, so both word errors and frame rates the same way."""
from __future__ import annotations

import av

from ..errors import reason
from ..runtime.clock import exact_rate  # noqa: F401  (sources and sinks take it from here)

__all__ = ["describe_fps", "error_reason", "exact_rate", "stream_fps"]


def error_reason(error: BaseException, timeout_s: float | None = None) -> str:
    """A short human reason for an FFmpeg/OS error (without PyAV's repeated file name and the errno).

    ``timeout_s``: the read/open timeout in force, named when PyAV's interrupt callback (our timeout) fired."""
    if isinstance(error, av.error.ExitError):
        return f"no data within {timeout_s:g} s" if timeout_s else "timed out"
    return reason(error)


def stream_fps(stream: av.VideoStream) -> float | None:
    """A video stream's frame rate from the best of its container's guesses; None when it has none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def describe_fps(fps: float | None) -> str:
    return f"{fps:.3g} fps" if fps else "unknown fps"
