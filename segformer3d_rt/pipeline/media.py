"""Small helpers that sources and sinks share, so both word errors and frame rates the same way."""
from __future__ import annotations

from fractions import Fraction

import av

__all__ = ["describe_fps", "error_reason", "exact_rate", "stream_fps"]


def error_reason(error: BaseException, timeout_s: float | None = None) -> str:
    """A short human reason for an FFmpeg/OS error (without PyAV's repeated file name and the errno).

    ``timeout_s``: the read/open timeout in force, named when PyAV's interrupt callback (our timeout) fired."""
    if isinstance(error, av.error.ExitError):
        return f"no data within {timeout_s:g} s" if timeout_s else "timed out"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).strip().rstrip(".")


def exact_rate(fps: float) -> Fraction:
    """A frame rate as the fraction it stands for: 29.97002997 -> 30000/1001, 25.0 -> 25."""
    return Fraction(fps).limit_denominator(1_000_000)


def stream_fps(stream: av.VideoStream) -> float | None:
    """A video stream's frame rate from the best of its container's guesses; None when it has none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def describe_fps(fps: float | None) -> str:
    return f"{fps:.3g} fps" if fps else "unknown fps"
