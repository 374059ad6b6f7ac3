"""Small helpers that sources and sinks share, so both word errors and frame rates the same way."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import av
import av.logging

from ..errors import reason
from ..runtime.clock import exact_rate  # noqa: F401  (sources and sinks take it from here)

__all__ = ["describe_fps", "error_reason", "exact_rate", "ffmpeg_errors", "stream_fps"]


def error_reason(error: BaseException, timeout_s: float | None = None) -> str:
    """A short human reason for an FFmpeg/OS error (without PyAV's repeated file name and the errno).

    ``timeout_s``: the read/open timeout in force, named when PyAV's interrupt callback (our timeout) fired."""
    if isinstance(error, av.error.ExitError):
        return f"no data within {timeout_s:g} s" if timeout_s else "timed out"
    return reason(error)


class FFmpegLog:
    """FFmpeg's error lines captured in :func:`ffmpeg_errors`; ``why(error)`` prefers the last one, which names
    the real cause ("Cannot load libcuda.so.1", "opus only supported in MP4") where the error says only
    "Invalid argument"."""

    def __init__(self, entries: list | None = None) -> None:
        self._entries = entries if entries is not None else []  # PyAV's live capture list: (level, name, text)

    @property
    def lines(self) -> list[str]:
        return [str(e[2]).strip().rstrip(".") for e in self._entries
                if e[0] <= av.logging.ERROR and str(e[2]).strip()]

    def why(self, error: BaseException) -> str:
        lines = self.lines
        return lines[-1] if lines else error_reason(error)

    def clear(self) -> None:
        del self._entries[:]


@contextmanager
def ffmpeg_errors() -> Iterator[FFmpegLog]:
    """Capture FFmpeg's error lines of this thread (instead of printing them) around a trial open or mux.

    PyAV's log level is process-wide: it is raised to ERROR only for the duration (setup runs before the stage
    threads start) and put back."""
    old = av.logging.get_level()
    skip = av.logging.get_skip_repeated()
    if old is None or old < av.logging.ERROR:  # PyAV's levels: lower is quieter (None: nothing at all)
        av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # else a second trial's identical line is swallowed
    try:
        with av.logging.Capture(True) as entries:
            yield FFmpegLog(entries)
    finally:
        av.logging.set_skip_repeated(skip)
        av.logging.set_level(old)


def stream_fps(stream: av.VideoStream) -> float | None:
    """A video stream's frame rate from the best of its container's guesses; None when it has none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def describe_fps(fps: float | None) -> str:
    return f"{fps:.3g} fps" if fps else "unknown fps"
