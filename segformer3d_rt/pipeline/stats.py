"""Latency and throughput bookkeeping, shared by the stage threads (one lock, O(1) updates).

Memory is fixed however long a run lasts: every per-frame figure (stage times, capture-to-output
latency, intervals between outputs) goes into a ``LogHistogram`` (exact count/sum/min/max, percentiles
within 0.5% of numpy's), and only the HUD's recent window is kept as values, in rings of fixed length.
``summarise``/``throughput`` remain the exact versions for a finite list (bench, tests).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np

from .histogram import LogHistogram

STAGES = ("decode", "preprocess", "inference", "render", "sink")


def summarise(values_s: list[float] | np.ndarray) -> dict[str, float | int | None]:
    """p50/p95/p99/max/mean in milliseconds, exact, of a finite list (``LogHistogram.summary`` for streams)."""
    a = np.asarray(values_s, dtype=np.float64) * 1000.0
    if a.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": int(a.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(a.max()), "mean": float(a.mean())}


def throughput(times: list[float] | np.ndarray) -> float | None:
    """(n - 1) / (t_last - t_first): frames per second between the first and last output."""
    if len(times) < 2:
        return None
    span = float(times[-1] - times[0])
    return (len(times) - 1) / span if span > 0 else None


class PipelineStats:
    """Per-stage durations, capture-to-output latency, counts. Thread-safe; fixed memory.

    ``snapshot`` costs the same after a minute or a day (a few cumulative sums over ~2,500 buckets per
    figure), so a dashboard can call it at its own refresh rate.
    """

    def __init__(self, window: int = 120) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, LogHistogram] = {}  # one per stage name: a fixed, small set (STAGES)
        self.latency = LogHistogram()  # capture -> output, seconds
        self.intervals = LogHistogram()  # between consecutive outputs, seconds
        self.frames_in = 0
        self.frames_out = 0
        self.dropped: dict[str, int] = defaultdict(int)  # keyed by queue name: a fixed, small set
        self.reconnects = 0
        # damaged input: undecodable packets skipped, and the first stretches where (the count goes on)
        self.packets_lost = 0
        self.damaged_spans: tuple[dict, ...] = ()  # at most 32: a tuple, so nothing here grows by itself
        self.damaged_spans_total = 0
        self.t_start = time.perf_counter()
        self._first_out: float | None = None
        self._last_out: float | None = None
        # the HUD's recent window: rings of fixed length
        self._recent_out: deque[float] = deque(maxlen=window)
        self._recent_lat: deque[float] = deque(maxlen=window)

    def add_stage(self, stage: str, seconds: float, frames: int = 1) -> None:
        """A stage's time per frame; a batch of n frames counts its time once per frame."""
        with self._lock:
            h = self.stages.get(stage)
            if h is None:
                h = self.stages[stage] = LogHistogram()
            h.add(seconds, frames)

    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1

    def drop(self, where: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[where] += n

    def damaged(self, packets: int, from_s: float | None, to_s: float | None) -> None:
        """A stretch of the input that did not decode (sources' ``on_damage``): ``to_s`` None means to the end."""
        with self._lock:
            self.packets_lost += packets
            self.damaged_spans_total += 1
            if len(self.damaged_spans) < 32:
                self.damaged_spans += ({"from_s": from_s, "to_s": to_s, "packets": packets},)

    def frame_out(self, t_capture: float, t_out: float | None = None) -> None:
        t_out = time.perf_counter() if t_out is None else t_out
        with self._lock:
            self.frames_out += 1
            if self._last_out is not None:
                self.intervals.add(t_out - self._last_out)
            else:
                self._first_out = t_out
            self._last_out = t_out
            self.latency.add(t_out - t_capture)
            self._recent_out.append(t_out)
            self._recent_lat.append(t_out - t_capture)

    def recent(self) -> tuple[float | None, float | None]:
        """(fps, median latency ms) over the last frames: what the HUD shows."""
        with self._lock:
            outs, lats = list(self._recent_out), list(self._recent_lat)
        fps = throughput(outs)
        lat = float(np.median(lats)) * 1000.0 if lats else None
        return fps, lat

    def recent_latencies(self) -> list[float]:
        """Capture-to-output latencies (seconds) of the last ``window`` outputs, oldest first."""
        with self._lock:
            return list(self._recent_lat)

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return sum(self.dropped.values())

    def throughput_fps(self) -> float | None:
        """(frames_out - 1) / (t_last_out - t_first_out), exact, from the first and last output times."""
        with self._lock:
            return self._throughput()

    def _throughput(self) -> float | None:  # lock held
        if self.frames_out < 2 or self._first_out is None or self._last_out is None:
            return None
        span = self._last_out - self._first_out
        return (self.frames_out - 1) / span if span > 0 else None

    def figures(self) -> tuple[dict[str, LogHistogram], LogHistogram, int, int]:
        """Copies of (stage histograms, capture-to-output histogram, frames in, frames out), taken together."""
        with self._lock:
            return ({k: h.copy() for k, h in self.stages.items()}, self.latency.copy(), self.frames_in,
                    self.frames_out)

    def snapshot(self, source_fps: float | None = None) -> dict:
        with self._lock:  # copy the fixed-size state; summarise outside the lock
            stages = {k: h.copy() for k, h in self.stages.items()}
            lat, gaps = self.latency.copy(), self.intervals.copy()
            fps = self._throughput()
            elapsed = (self._last_out if self._last_out is not None else time.perf_counter()) - self.t_start
            frames = {"in": self.frames_in, "out": self.frames_out,
                      "dropped": sum(self.dropped.values()), "dropped_by_stage": dict(self.dropped)}
            reconnects = self.reconnects
            damage = {"packets_lost": self.packets_lost, "spans": [dict(d) for d in self.damaged_spans],
                      "spans_total": self.damaged_spans_total}
        return {
            "frames": frames,
            "reconnects": reconnects,
            "damage": damage,
            "elapsed_s": elapsed,
            "throughput_fps": fps,
            "realtime_factor": (fps / source_fps) if (fps and source_fps) else None,
            "latency_ms": {"capture_to_output": lat.summary(),
                           "stages": {k: stages[k].summary() for k in _ordered(stages)}},
            "frame_interval_ms": gaps.summary(),
        }


def _ordered(stages: dict) -> list[str]:
    """The pipeline's stages in their order, then any other a caller timed (`serve`'s batch wait), by name."""
    return [k for k in STAGES if k in stages] + sorted(k for k in stages if k not in STAGES)
