"""The pipeline: capture -> preprocess -> inference -> render -> sinks, one thread per stage.

Stages are joined by bounded queues. Files are lossless with back-pressure (a full queue blocks
its producer, so frames out == frames in). Live sources keep only the newest frame in every
queue (older frames are dropped and counted), so no lag builds up.

Stopping: ``request_stop()`` (Ctrl-C, SIGTERM, SIGHUP, q in the window, --max-frames) only stops capture;
everything in flight drains and the sinks finalise. ``abort`` (a stage failed, or a second Ctrl-C) stops
every stage at once: what was in flight is left and counted (``abandoned``), the sinks still finalise what
was written. No thread outlives ``join()``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .frames import Frame
from .infer import InferenceEngine, gpu_seconds
from .preprocess import Preprocessor
from .stats import PipelineStats

log = logging.getLogger(__name__)
END = object()  # end-of-stream marker, never dropped


class StageQueue:
    """A bounded queue with the pipeline's two policies: block (lossless) or newest-wins (live)."""

    def __init__(self, name: str, maxsize: int, live: bool, stats: PipelineStats, abort: threading.Event) -> None:
        self.name = name
        self.live = live
        self.stats = stats
        self.abort = abort
        self._q: queue.Queue = queue.Queue(maxsize=1 if live else maxsize)

    def put(self, item: Any) -> bool:
        """False when the pipeline is aborting."""
        if self.live and item is not END:
            while not self.abort.is_set():
                try:
                    self._q.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        old = self._q.get_nowait()
                    except queue.Empty:
                        continue
                    if old is END:  # never lose the end marker
                        self._q.put(old)
                        return True
                    self.stats.drop(self.name)
            return False
        while not self.abort.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float | None = None) -> Any:
        """The next item, END at the end, None on abort or when ``timeout`` passes."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not self.abort.is_set():
            wait = 0.1 if deadline is None else min(0.1, deadline - time.perf_counter())
            if wait <= 0:
                return None
            try:
                return self._q.get(timeout=wait)
            except queue.Empty:
                continue
        return None


class DeferredStageTimes:
    """The inference stage's time per batch when the GPU work is not synchronised (results stay on the device):
    ``add`` keeps the batch's CUDA events, ``poll`` books every batch whose end event has completed (without
    waiting), ``flush`` waits for the rest (at the end of the stage). Batches without events are booked at once.
    ``seconds(timing, host_s)`` gives a finished batch's stage time (:func:`~.infer.gpu_seconds`).

    The inference thread never waits on the GPU for statistics, so nothing is serialised beyond what the
    pipeline already does; a bounded backlog (``max_pending``) waits for its oldest batch instead of growing.
    """

    def __init__(self, stats: PipelineStats, stage: str = "inference", max_pending: int = 64,
                 seconds: Callable[[Any, float], float] = gpu_seconds) -> None:
        self.stats = stats
        self.stage = stage
        self.max_pending = max_pending
        self._seconds = seconds
        self._pending: deque[tuple[Any, float, int]] = deque()

    def add(self, timing: Any, host_s: float, frames: int) -> None:
        if timing is None:
            self._book(None, host_s, frames)
            return
        self._pending.append((timing, host_s, frames))
        while len(self._pending) > self.max_pending:
            self._book(*self._pending.popleft())
        self.poll()

    def poll(self) -> None:
        while self._pending and self._pending[0][0][1].query():
            self._book(*self._pending.popleft())

    def flush(self) -> None:
        while self._pending:
            self._book(*self._pending.popleft())

    def _book(self, timing: Any, host_s: float, frames: int) -> None:
        seconds = self._seconds(timing, host_s)
        self.stats.add_stage(self.stage, seconds / frames, frames=frames)

    def __len__(self) -> int:
        return len(self._pending)


@dataclass
class StageError:
    stage: str
    error: BaseException


@dataclass
class Processed:
    frame: Frame
    classes: np.ndarray | torch.Tensor  # h x w uint8 (a device tensor when rendering on the GPU)
    depth: np.ndarray | torch.Tensor | None  # h' x w' float32
    image: torch.Tensor | None = None  # the frame on the device, when rendering on the GPU


@dataclass
class PipelineParts:
    """Everything the runner wires together; built by ``app.build_parts``."""

    source: Any  # pipeline.sources.Source
    preprocess: Preprocessor
    engine: InferenceEngine
    render: Callable[[Processed, list[str]], np.ndarray]
    sinks: list[Any]  # pipeline.sinks.Sink
    live: bool
    batch_size: int
    queue_size: int
    max_frames: int | None = None
    hud: bool = True
    main_thread_sinks: list[Any] = field(default_factory=list)  # e.g. the display window


class Pipeline:
    def __init__(self, parts: PipelineParts, stats: PipelineStats | None = None) -> None:
        self.p = parts
        self.stats = stats or PipelineStats()
        self.stop_capture = threading.Event()
        self.abort = threading.Event()
        self.errors: list[StageError] = []
        self.source_error: BaseException | None = None
        q = lambda name: StageQueue(name, parts.queue_size, parts.live, self.stats, self.abort)  # noqa: E731
        self.q_frames, self.q_tensors, self.q_results, self.q_rendered = (
            q("capture"), q("preprocess"), q("inference"), q("render"))
        self.threads: list[threading.Thread] = []
        self.interrupted = False

    # -- control ---------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop reading new frames; drain and finish what is in flight."""
        self.stop_capture.set()

    def fail(self, stage: str, error: BaseException) -> None:
        self.errors.append(StageError(stage, error))
        self.abort.set()

    def _stage(self, name: str, body: Callable[[], None], downstream: StageQueue | None) -> threading.Thread:
        def target() -> None:
            try:
                body()
            except BaseException as e:  # noqa: BLE001  -- any failure stops every stage
                log.debug("stage %s failed", name, exc_info=True)
                self.fail(name, e)
            finally:
                if downstream is not None:
                    downstream.put(END)

        t = threading.Thread(target=target, name=f"pipeline-{name}", daemon=True)
        self.threads.append(t)
        return t

    # -- stages ------------------------------------------------------------------------------------
    def _capture(self) -> None:
        frames: Iterator[Frame] = iter(self.p.source.frames())
        n = 0
        while not (self.stop_capture.is_set() or self.abort.is_set()):
            if self.p.max_frames is not None and n >= self.p.max_frames:
                break
            t0 = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                break
            except UserError as e:
                # a damaged file or lost stream: keep what decoded, report after draining
                self.source_error = e
                break
            self.stats.add_stage("decode", time.perf_counter() - t0)
            self.stats.frame_in()
            n += 1
            if not self.q_frames.put(frame):
                break
        self.stats.reconnects = getattr(self.p.source, "reconnects", 0)

    def _preprocess(self) -> None:
        while (item := self.q_frames.get()) is not None and item is not END:
            t0 = time.perf_counter()
            tensor = self.p.preprocess(item)
            self.stats.add_stage("preprocess", time.perf_counter() - t0)
            if not self.q_tensors.put((item, tensor)):
                return

    def _next_batch(self, first: tuple[Frame, torch.Tensor]) -> tuple[list, bool]:
        """Group frames of one size into a batch (files only). Returns (batch, reached END)."""
        batch = [first]
        if self.p.live:
            return batch, False
        while len(batch) < self.p.batch_size:
            item = self.q_tensors.get()
            if item is None or item is END:
                return batch, True
            if item[1].shape != first[1].shape:  # image folders may mix sizes: flush
                self._held = item
                return batch, False
            batch.append(item)
        return batch, False

    def _inference(self) -> None:
        times = DeferredStageTimes(self.stats)
        self._inference_loop(times)
        times.flush()  # the last batches' GPU times (not on an error: the stage failed)

    def _inference_loop(self, times: DeferredStageTimes) -> None:
        engine = self.p.engine
        self._held = None
        pending = None  # (batch, device batch) uploaded ahead while the previous one computes
        ended = False
        while True:
            if pending is None:
                if ended:
                    return
                first = self._held or self.q_tensors.get()
                self._held = None
                if first is None or first is END:
                    return
                batch, ended = self._next_batch(first)
                pending = (batch, engine.upload(torch.stack([t for _, t in batch])))
            batch, dev = pending
            pending = None
            t0 = time.perf_counter()
            first_frame = batch[0][0]
            size = (self.p.preprocess.input_size((first_frame.height, first_frame.width))
                    if self.p.preprocess.resize_on_device else None)
            result = engine.run(dev, size)
            # with results kept on the device nothing synchronised: the GPU time comes from the batch's events
            times.add(getattr(result, "timing", None), time.perf_counter() - t0, len(batch))
            host = not engine.keep_on_device
            for i, (frame, _) in enumerate(batch):
                classes = result.classes[i]
                depth = result.depth[i] if result.depth is not None else None
                image = result.images[i] if result.images is not None else None
                if host:
                    classes, depth = classes.numpy(), (depth.numpy() if depth is not None else None)
                if getattr(result, "attention", None) is not None:  # --view attention: the frame's maps
                    frame.extra["attention"] = result.attention[i]
                if not self.q_results.put(Processed(frame, classes, depth, image)):
                    return
            # Upload the next batch if one is already waiting, so on CUDA its copy overlaps compute.
            if not ended:
                nxt = self._held or self.q_tensors.get(timeout=0.0 if self.p.live else 0.001)
                self._held = None
                if nxt is END:
                    ended = True
                elif nxt is not None:
                    nb, ended = self._next_batch(nxt)
                    pending = (nb, engine.upload(torch.stack([t for _, t in nb])))

    def _render(self) -> None:
        while (item := self.q_results.get()) is not None and item is not END:
            t0 = time.perf_counter()
            hud: list[str] = []
            if self.p.hud:
                fps, lat = self.stats.recent()
                if fps is not None:
                    hud.append(f"{fps:5.1f} FPS   latency {lat:.0f} ms")
            rendered = self.p.render(item, hud)
            self.stats.add_stage("render", time.perf_counter() - t0)
            if not self.q_rendered.put((item.frame, rendered)):
                return

    def _sink(self) -> None:
        while (item := self.q_rendered.get()) is not None and item is not END:
            frame, rendered = item
            t0 = time.perf_counter()
            for sink in self.p.sinks:
                sink.write(frame, rendered)
            t1 = time.perf_counter()
            self.stats.add_stage("sink", t1 - t0)
            self.stats.frame_out(frame.t_capture, t1)
            if any(getattr(s, "stop_requested", False) for s in self.p.sinks):
                self.request_stop()

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._stage("capture", self._capture, self.q_frames).start()
        self._stage("preprocess", self._preprocess, self.q_tensors).start()
        self._stage("inference", self._inference, self.q_results).start()
        self._stage("render", self._render, self.q_rendered).start()
        self._stage("sink", self._sink, None).start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    @property
    def abandoned(self) -> int:
        """Frames read but neither written nor dropped: what an abort left in flight (0 after a drain)."""
        s = self.stats
        return max(0, s.frames_in - s.frames_out - s.dropped_total)

    def pump(self) -> None:
        """Main-thread duties between waits: GUI windows must be driven from the main thread."""
        for s in self.p.main_thread_sinks:
            s.pump()
            if getattr(s, "stop_requested", False):
                self.request_stop()

    def join(self, timeout: float = 30.0) -> None:
        deadline = time.perf_counter() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.perf_counter()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:  # should not happen; abort and say so rather than hang
            self.abort.set()
            for t in self.threads:
                t.join(2.0)
            log.warning("stages still running at exit: %s", ", ".join(stuck))
