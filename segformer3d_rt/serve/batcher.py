"""The batcher: one thread, one network, every stream.

Each round it starts at the next stream in turn (round-robin, so none starves), takes the first frame waiting in
a mailbox, then up to ``max_batch`` frames of the same input shape from the others, waiting at most ``max_wait``
after the first for more to arrive. Every stream pads its frames to one input shape (``stream.Stream._fit``), so any streams batch
together. The batch is padded to the next of a few fixed sizes (each compiled once by
OpenVINO / TensorRT / CUDA graphs) and run; each frame's result goes to its stream's render thread. A stream
with nothing waiting is simply skipped: a stalled or dead stream never delays the others.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..pipeline.histogram import LogHistogram
from ..pipeline.infer import InferenceEngine
from ..pipeline.runner import Processed
from .stream import Job, Stream, stack_batch

log = logging.getLogger(__name__)


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The padded sizes: powers of two below ``max_batch``, and ``max_batch`` itself (4 -> 1, 2, 4)."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return tuple(sizes)


class Batcher:
    """``start()``/``stop()`` the thread. ``streams()`` gives the current streams (a tuple the hub replaces
    on every change, so reading it needs no lock); ``wake`` is set by every mailbox on a new frame."""

    def __init__(self, engine: InferenceEngine, streams: Callable[[], Sequence[Stream]], max_batch: int,
                 max_wait_s: float, wake: threading.Event) -> None:
        self.engine = engine
        self.streams = streams
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.sizes = batch_sizes(max_batch)
        self.wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = 0  # the stream a round starts at
        self.lock = threading.Lock()  # guards the figures below against a scrape reading them mid-update
        self.batches = 0
        self.batch_hist = {n: 0 for n in range(1, max_batch + 1)}  # batches by real frames (before padding)
        self.inference = LogHistogram()  # seconds per batch
        self.error: str | None = None

    def start(self) -> "Batcher":
        self._thread = threading.Thread(target=self._run, name="serve-batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(10.0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                try:
                    self._infer(batch)
                except Exception as e:  # noqa: BLE001  -- said on every page; the next batch tries again
                    self.error = f"inference failed: {type(e).__name__}: {e}"
                    log.warning("%s", self.error, exc_info=log.isEnabledFor(logging.DEBUG))
                    time.sleep(0.5)

    def _collect(self) -> list[tuple[Stream, Job]]:
        """Frames of one input shape from up to ``max_batch`` streams; [] when nothing arrived for 0.2 s."""
        self.wake.wait(0.2)
        self.wake.clear()
        streams = tuple(self.streams())
        if not streams:
            return []
        start = self._next % len(streams)
        order = streams[start:] + streams[:start]
        batch: list[tuple[Stream, Job]] = []
        taken: set[str] = set()
        deadline: float | None = None
        while not self._stop.is_set():
            for s in order:
                if len(batch) >= self.max_batch:
                    break
                if s.name in taken:
                    continue
                job = s.mailbox.take()
                if job is None:
                    continue
                if batch and job.tensor.shape != batch[0][1].tensor.shape:
                    s.mailbox.restore(job)  # another input shape: first in a later round
                    continue
                batch.append((s, job))
                taken.add(s.name)
            if not batch:
                return []
            if deadline is None:
                deadline = time.perf_counter() + self.max_wait_s
                # the next round starts after the stream that came first, so every stream gets to be first
                self._next = (streams.index(batch[0][0]) + 1) % len(streams)
            left = deadline - time.perf_counter()
            if len(batch) >= self.max_batch or left <= 0 or len(taken) == len(order):
                return batch
            self.wake.wait(left)
            self.wake.clear()
        return batch

    def _infer(self, batch: list[tuple[Stream, Job]]) -> None:
        n = len(batch)
        size = next(b for b in self.sizes if b >= n)
        t0 = time.perf_counter()
        for s, job in batch:
            s.stats.add_stage("batch", t0 - job.t_ready)  # waiting for the batch to form and the network
        result = self.engine(stack_batch([job.tensor for _, job in batch], size))
        t1 = time.perf_counter()
        with self.lock:
            self.batches += 1
            self.batch_hist[n] += 1
            self.inference.add(t1 - t0)
        for i, (s, job) in enumerate(batch):
            s.stats.add_stage("inference", t1 - t0)
            h, w = job.valid  # the padding is cut off; depth is at stride 4 of the input
            classes = np.ascontiguousarray(result.classes[i, :h, :w].numpy())
            depth = None
            if result.depth is not None:
                sh, sw = result.depth.shape[1] / job.tensor.shape[0], result.depth.shape[2] / job.tensor.shape[1]
                depth = np.ascontiguousarray(result.depth[i, : round(h * sh), : round(w * sw)].numpy())
            s.deliver(Processed(job.frame, classes, depth))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"batches": self.batches, "sizes": list(self.sizes), "max_wait_ms": self.max_wait_s * 1000,
                    "frames_per_batch": {str(k): v for k, v in self.batch_hist.items() if v},
                    "inference_ms": self.inference.summary(), "error": self.error}

