"""Latency and throughput bookkeeping, shared by the stage threads (one lock, cheap appends)."""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np

STAGES = ("decode", "preprocess", "inference", "render", "sink")


def summarise(values_s: list[float] | np.ndarray) -> dict[str, float | int | None]:
    """p50/p95/p99/max/mean in milliseconds."""
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
    """Per-stage durations, capture-to-output latency, counts. Thread-safe."""

    def __init__(self, window: int = 120) -> None:
        self._lock = threading.Lock()
        self.stage_s: dict[str, list[float]] = defaultdict(list)
        self.latency_s: list[float] = []
        self.out_times: list[float] = []
        self.frames_in = 0
        self.frames_out = 0
        self.dropped: dict[str, int] = defaultdict(int)
        self.reconnects = 0
        self.t_start = time.perf_counter()
        self._recent_out: deque[float] = deque(maxlen=window)
        self._recent_lat: deque[float] = deque(maxlen=window)

    def add_stage(self, stage: str, seconds: float, frames: int = 1) -> None:
        """A stage's time per frame; a batch of n frames counts its time once per frame."""
        with self._lock:
            self.stage_s[stage].extend([seconds] * frames)

    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1

    def drop(self, where: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[where] += n

    def frame_out(self, t_capture: float, t_out: float | None = None) -> None:
        t_out = time.perf_counter() if t_out is None else t_out
        with self._lock:
            self.frames_out += 1
            self.out_times.append(t_out)
            self.latency_s.append(t_out - t_capture)
            self._recent_out.append(t_out)
            self._recent_lat.append(t_out - t_capture)

    def recent(self) -> tuple[float | None, float | None]:
        """(fps, median latency ms) over the last frames: what the HUD shows."""
        with self._lock:
            outs, lats = list(self._recent_out), list(self._recent_lat)
        fps = throughput(outs)
        lat = float(np.median(lats)) * 1000.0 if lats else None
        return fps, lat

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return sum(self.dropped.values())

    def snapshot(self, source_fps: float | None = None) -> dict:
        with self._lock:
            stages = {k: summarise(v) for k, v in self.stage_s.items()}
            lat = summarise(self.latency_s)
            fps = throughput(self.out_times)
            elapsed = (self.out_times[-1] if self.out_times else time.perf_counter()) - self.t_start
            return {
                "frames": {"in": self.frames_in, "out": self.frames_out,
                           "dropped": sum(self.dropped.values()), "dropped_by_stage": dict(self.dropped)},
                "reconnects": self.reconnects,
                "elapsed_s": elapsed,
                "throughput_fps": fps,
                "realtime_factor": (fps / source_fps) if (fps and source_fps) else None,
                "latency_ms": {"capture_to_output": lat,
                               "stages": {k: stages[k] for k in STAGES if k in stages}},
            }
