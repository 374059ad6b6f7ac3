"""Fixed-size summaries of a stream of positive figures (durations): log-spaced bucket histograms.

A ``LogHistogram`` holds one count per bucket of a fixed, log-spaced grid over ``[lo, hi]``, plus the exact
count, sum, min and max. Its memory is set when it is made (about 2,500 int64 counts, 20 KB, for the
default 100 ns .. 2.8 h range at 0.5% relative error; the bucket values are shared) and does not change
however many values are added, so a run of any length costs the same to keep and to summarise.

Precision: bucket ``i`` covers ``(g**(i-1), g**i]`` with ``g = (1 + a) / (1 - a)`` and is represented by
``2 g**i / (g + 1)``, which is within a relative ``a`` (``rel_error``, 0.5% by default) of every value in
it. ``percentile(q)`` follows numpy's default (linear) definition: the two order statistics around rank
``q/100 * (n - 1)`` are each estimated within ``a`` and interpolated, so the result is within a relative
``a`` of ``np.percentile`` of the same data, for any data within [lo, hi]. Ranks 0 and n - 1 are the exact min and max,
and estimates are clamped to [min, max]. Values below ``lo`` (or not positive) share one underflow bucket and
read back as the exact min; values above ``hi`` share one overflow bucket and read back as the exact max.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import numpy as np


@functools.lru_cache(maxsize=8)
def _bucket_values(gamma: float, first: int, last: int, lo: float, hi: float) -> np.ndarray:
    """Representative value of each bucket (read-only, shared by every histogram of one layout)."""
    reps = 2.0 * np.power(gamma, np.arange(first, last + 1, dtype=np.float64)) / (gamma + 1.0)
    values = np.concatenate([[lo], reps, [hi]])
    values.flags.writeable = False
    return values


class LogHistogram:
    """Count, sum, min, max (exact) and log-bucket counts (fixed size); percentiles within ``rel_error``."""

    __slots__ = ("rel_error", "lo", "hi", "_gamma", "_inv_log_gamma", "_offset", "_counts", "_values",
                 "count", "sum", "min", "max")

    def __init__(self, rel_error: float = 0.005, lo: float = 1e-7, hi: float = 1e4) -> None:
        if not 0 < rel_error < 1:
            raise ValueError(f"rel_error must be in (0, 1), got {rel_error}")
        if not 0 < lo < hi:
            raise ValueError(f"need 0 < lo < hi, got lo={lo} hi={hi}")
        self.rel_error, self.lo, self.hi = float(rel_error), float(lo), float(hi)
        self._gamma = (1.0 + rel_error) / (1.0 - rel_error)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        first = math.ceil(math.log(lo) * self._inv_log_gamma)  # bucket of lo
        last = math.ceil(math.log(hi) * self._inv_log_gamma)  # bucket of hi
        # index 0: underflow (< lo, including <= 0); 1..n: the log buckets; n + 1: overflow (> hi)
        self._offset = first - 1
        n = last - first + 1
        self._counts = np.zeros(n + 2, dtype=np.int64)
        self._values = _bucket_values(self._gamma, first, last, self.lo, self.hi)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    # -- adding ------------------------------------------------------------------------------------
    def _index(self, x: float) -> int:
        if x < self.lo:
            return 0
        if x > self.hi:
            return len(self._counts) - 1
        i = math.ceil(math.log(x) * self._inv_log_gamma) - self._offset
        return min(max(i, 1), len(self._counts) - 2)  # float rounding right at lo / hi

    def add(self, x: float, count: int = 1) -> None:
        """Record ``x`` ``count`` times (e.g. a batch's per-frame time once per frame). O(1)."""
        if count <= 0:
            return
        x = float(x)
        self._counts[self._index(x)] += count
        self.count += count
        self.sum += x * count
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def add_many(self, values: Iterable[float] | np.ndarray) -> None:
        """Record every value of an array at once (vectorised; same result as ``add`` one by one)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        idx = np.empty(v.shape, dtype=np.int64)
        under, over = v < self.lo, v > self.hi
        mid = ~(under | over)
        idx[under] = 0
        idx[over] = len(self._counts) - 1
        idx[mid] = np.clip(np.ceil(np.log(v[mid]) * self._inv_log_gamma).astype(np.int64) - self._offset,
                           1, len(self._counts) - 2)
        self._counts += np.bincount(idx, minlength=len(self._counts))
        self.count += int(v.size)
        self.sum += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Add ``other``'s values into this one (same layout); equal to having added them here."""
        if (other.rel_error, other.lo, other.hi) != (self.rel_error, self.lo, self.hi):
            raise ValueError("can only merge histograms with the same rel_error, lo and hi")
        self._counts += other._counts
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def copy(self) -> LogHistogram:
        new = LogHistogram.__new__(LogHistogram)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        new._counts = self._counts.copy()  # _values is never written: shared
        return new

    # -- reading -----------------------------------------------------------------------------------
    @property
    def n_buckets(self) -> int:
        """Fixed at construction, whatever is added."""
        return len(self._counts)

    @property
    def nbytes(self) -> int:
        return int(self._counts.nbytes)  # the bucket values are shared

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def count_le(self, bound: float) -> int:
        """How many values are at most ``bound`` (Prometheus' cumulative buckets); values within ``rel_error`` of
        ``bound`` may be counted on either side."""
        if math.isinf(bound):
            return int(self.count) if bound > 0 else 0
        return int(self._counts[: self._index(bound) + 1].sum())

    def percentiles(self, qs: Sequence[float]) -> list[float | None]:
        """numpy-style (linear) percentiles, q in [0, 100], each within ``rel_error`` of the exact one."""
        if self.count == 0:
            return [None for _ in qs]
        n = self.count
        cum = np.cumsum(self._counts)
        last = len(self._counts) - 1

        def at_rank(r: int) -> float:
            if r <= 0:
                return self.min
            if r >= n - 1:
                return self.max
            b = int(np.searchsorted(cum, r, side="right"))  # first bucket holding more than r values
            if b == 0:
                return self.min
            if b == last:
                return self.max
            return min(max(float(self._values[b]), self.min), self.max)

        out: list[float | None] = []
        for q in qs:
            if not 0 <= q <= 100:
                raise ValueError(f"percentile must be in [0, 100], got {q}")
            k = q / 100.0 * (n - 1)
            lo = math.floor(k)
            frac = k - lo
            a = at_rank(lo)
            out.append(a if frac == 0 else a + (at_rank(lo + 1) - a) * frac)
        return out

    def percentile(self, q: float) -> float | None:
        return self.percentiles([q])[0]

    def summary(self, scale: float = 1000.0) -> dict[str, float | int | None]:
        """The stats JSON's S = {count, p50, p95, p99, max, mean}, times ``scale`` (seconds -> ms)."""
        if self.count == 0:
            return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        p50, p95, p99 = self.percentiles([50, 95, 99])
        return {"count": self.count, "p50": p50 * scale, "p95": p95 * scale, "p99": p99 * scale,
                "max": self.max * scale, "mean": self.sum / self.count * scale}

    def __repr__(self) -> str:
        return (f"LogHistogram(count={self.count}, min={self.min}, max={self.max}, "
                f"buckets={self.n_buckets}, rel_error={self.rel_error})")
