"""Soak: one long live run with the process's resources sampled at a fixed interval, to show they stay flat.

Every ``interval_s`` a sampler thread reads ``/proc/self`` (resident memory, threads, open file descriptors),
glibc's heap account (used and free), the process CPU time and each thread's CPU time
(``/proc/self/task/TID/stat``), so the dashboard's refresh thread and each pipeline stage show apart; frames and
latency come from the run's own statistics. The summary compares the medians of the first and the last quarter
of the samples: a leak or a cost growing with the run length shows as a difference there. Linux only
(``/proc``); elsewhere the /proc figures are None.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..pipeline.config import RunConfig
from ..pipeline.session import execute
from ..pipeline.stats import PipelineStats

__all__ = ["FLAT_FIELDS", "Sampler", "heap_status", "proc_status", "soak", "summarise", "thread_cpu_s"]

_PROC = Path("/proc/self")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
# the figures that should not change with the run's length (first vs last quarter in the summary)
FLAT_FIELDS = ("rss_mib", "heap_used_mib", "heap_free_mib", "threads", "open_fds", "cpu_pct", "dashboard_cpu_pct",
               "fps", "latency_p50_ms")


def proc_status() -> dict[str, float | None]:
    """Resident memory (MiB), threads and open file descriptors of this process, from /proc/self."""
    rss = threads = fds = None
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0  # kB
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(_PROC / "fd"))
    except OSError:
        pass
    return {"rss_mib": rss, "threads": threads, "open_fds": fds}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc_mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc 2.33+
    except (AttributeError, OSError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _glibc_mallinfo2() if sys.platform == "linux" else None


def heap_status() -> dict[str, float | None]:
    """glibc's own account of its heap (every arena, MiB): what is allocated and what is free but kept. Tells a
    leak (used grows) from fragmentation (free grows); allocators that bypass malloc are not in it."""
    if _MALLINFO2 is None:
        return {"heap_used_mib": None, "heap_free_mib": None}
    m = _MALLINFO2()
    return {"heap_used_mib": round((m.uordblks + m.hblkhd) / 2**20, 2), "heap_free_mib": round(m.fordblks / 2**20, 2)}


def _labels() -> dict[int, str]:
    """Native thread id -> a name: Python threads by name; rich's refresh thread (the live dashboard)
    as "dashboard"; threads Python does not know (OpenVINO, torch, FFmpeg workers) are left out."""
    out = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        if t is threading.main_thread():
            out[t.native_id] = "main"
        elif type(t).__name__ == "_RefreshThread":  # rich.live's: it renders the dashboard
            out[t.native_id] = "dashboard"
        else:
            out[t.native_id] = t.name
    return out


def thread_cpu_s() -> dict[int, float]:
    """CPU time (user + system, seconds) of every thread of this process, by native thread id."""
    out = {}
    try:
        tids = os.listdir(_PROC / "task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = (_PROC / "task" / tid / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)", which may hold spaces
        out[int(tid)] = (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime
    return out


class Sampler:
    """Samples the process every ``interval_s`` from its own thread while ``running(stats)`` is held, and once
    more at the start and at the end (marked ``final``)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self.samples: list[dict[str, Any]] = []
        self._clock = clock
        self._stop = threading.Event()
        self._stats: PipelineStats | None = None
        self._t0 = clock()
        self._last: tuple[float, float, dict[int, float], int] | None = None  # wall, cpu, per thread, frames out

    @contextlib.contextmanager
    def running(self, stats: PipelineStats | None = None) -> Iterator[Sampler]:
        self._stats = stats
        self._t0 = self._clock()
        self._stop.clear()
        self.sample()
        thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.sample()["final"] = True  # the totals; its interval is the wind-down, left out of the summary

    def _loop(self) -> None:
        deadline = self._t0 + self.interval_s
        while not self._stop.wait(max(0.0, deadline - self._clock())):
            self.sample()
            deadline += self.interval_s

    def sample(self) -> dict[str, Any]:
        """Take one sample now (also callable by hand) and append it to ``samples``."""
        now, cpu, per_thread, labels = self._clock(), time.process_time(), thread_cpu_s(), _labels()
        frames = self._frames()
        s: dict[str, Any] = {"t_s": round(now - self._t0, 3), **proc_status(), **heap_status(), **frames}
        s["cpu_pct"] = s["fps"] = s["dashboard_cpu_pct"] = None
        s["thread_cpu_pct"] = {}
        if self._last is not None:
            wall, cpu0, per_thread0, out0 = self._last
            dt = now - wall
            if dt > 0:
                s["cpu_pct"] = round(100.0 * (cpu - cpu0) / dt, 2)
                s["fps"] = round((frames["frames_out"] - out0) / dt, 3) if frames["frames_out"] is not None \
                    else None
                by_name: dict[str, float] = {}
                for tid, spent in per_thread.items():
                    name = labels.get(tid, "native")  # threads Python did not start: summed
                    by_name[name] = by_name.get(name, 0.0) + spent - per_thread0.get(tid, 0.0)
                s["thread_cpu_pct"] = {k: round(100.0 * v / dt, 2) for k, v in sorted(by_name.items())}
                s["dashboard_cpu_pct"] = s["thread_cpu_pct"].get("dashboard", 0.0)
        self._last = (now, cpu, per_thread, frames["frames_out"] or 0)
        self.samples.append(s)
        return s

    def _frames(self) -> dict[str, Any]:
        if self._stats is None:
            return {"frames_in": None, "frames_out": None, "dropped": None, "latency_p50_ms": None}
        snap = self._stats.snapshot()
        recent = self._stats.recent_latencies()  # the last outputs: latency now, not since the start
        return {"frames_in": snap["frames"]["in"], "frames_out": snap["frames"]["out"],
                "dropped": snap["frames"]["dropped"],
                "latency_p50_ms": round(1000.0 * statistics.median(recent), 2) if recent else None}


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """First-quarter and last-quarter medians of each :data:`FLAT_FIELDS` figure, and the last minus the first.

    The first sample (taken at the start, before any interval) has no rates, and the final one covers the run's
    wind-down (stages ending, the encoder flushing): both are left out."""
    rated = [s for s in samples if s.get("cpu_pct") is not None and not s.get("final")]
    n = len(rated)
    out: dict[str, Any] = {"samples": len(samples), "intervals": n, "frames_out": None, "duration_s": None}
    if samples:
        out["frames_out"] = samples[-1].get("frames_out")
        out["duration_s"] = samples[-1]["t_s"]
    if n < 4:
        out["quarters"] = None  # too short a run to compare its start with its end
        return out
    q = n // 4
    first, last = rated[:q], rated[-q:]
    quarters = {}
    for key in FLAT_FIELDS:
        a, b = _median([s.get(key) for s in first]), _median([s.get(key) for s in last])
        quarters[key] = {"first": a, "last": b, "change": None if a is None or b is None else round(b - a, 3)}
    out["quarters"] = quarters
    out["max"] = {k: max((s[k] for s in rated if s.get(k) is not None), default=None)
                  for k in ("rss_mib", "threads", "open_fds")}
    return out


Interrupts = Callable[[Any], contextlib.AbstractContextManager]


def soak(cfg: RunConfig, interval_s: float = 5.0, interrupts: Interrupts | None = None,
         sampler: Sampler | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``cfg`` (normally a long live run) with a :class:`Sampler`; returns (exit code, report) where the report
    holds ``interval_s``, ``samples``, ``summary`` (:func:`summarise`) and ``run`` (the run's own report).
    ``interrupts(pipeline)``: the command's signal handling, held beside the sampler."""
    sampler = sampler or Sampler(interval_s)

    @contextlib.contextmanager
    def hold(pipeline: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if interrupts is not None:
                stack.enter_context(interrupts(pipeline))
            stack.enter_context(sampler.running(pipeline.stats))
            yield

    code, run_report = execute(cfg, interrupts=hold)
    return code, {"interval_s": sampler.interval_s, "samples": sampler.samples,
                  "summary": summarise(sampler.samples), "run": run_report}
