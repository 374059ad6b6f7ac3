"""Timestamps that only increase: what the video sinks and the stream sources share.

A clock counts in ticks of one ``time_base``; frames arrive with timestamps in their own time base
(rescaled here) or none, and may repeat or go back. :class:`IncreasingClock` keeps the last stamp and says
whether a candidate would increase; what to do when it would not is the user's choice (a sink shifts it
one tick, a stream re-anchors it to the wall clock), so that part stays with them.
"""
from __future__ import annotations

from fractions import Fraction


def exact_rate(fps: float) -> Fraction:
    """A frame rate as the fraction it stands for: 29.97002997 -> 30000/1001, 25.0 -> 25."""
    return Fraction(fps).limit_denominator(1_000_000)


def frame_ticks(rate: Fraction | None, time_base: Fraction) -> int:
    """Ticks of ``time_base`` per frame at ``rate`` frames per second: at least 1, and 1 when the rate is unknown."""
    return max(1, round(1 / (rate * time_base))) if rate else 1


def rescale(ticks: int, from_base: Fraction, to_base: Fraction) -> int:
    """A timestamp in ticks of ``from_base`` -> the nearest tick of ``to_base``."""
    return ticks if from_base == to_base else round(ticks * Fraction(from_base) / to_base)


class IncreasingClock:
    """Stamps in ticks of ``time_base``, each above the last (``commit`` records one)."""

    def __init__(self, time_base: Fraction, step: int = 1) -> None:
        self.time_base = Fraction(time_base)
        self.step = step  # ticks per frame
        self.last: int | None = None

    def increases(self, ticks: int) -> bool:
        return self.last is None or ticks > self.last

    def commit(self, ticks: int) -> int:
        self.last = ticks
        return ticks

    def seconds(self, ticks: int) -> float:
        return float(ticks * self.time_base)
