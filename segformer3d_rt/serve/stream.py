"""One stream of `serve`: its capture thread (source -> preprocess -> mailbox) and its render thread (the
batcher's results -> rendered frame -> LatestFrame slot and recording), its statistics and its state.

A stream never waits on another: it only ever touches its own source, its own mailbox and its own slots. A
source that fails (a camera unplugged, an RTSP server restarted) is reopened with back-off for as long as the
stream exists, the error shown meanwhile; a file that ends (not looped) leaves the stream "ended".
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, Callable

import cv2
import torch

from ..errors import UserError
from ..pipeline.config import RunConfig
from ..pipeline.frames import Frame
from ..pipeline.preprocess import Preprocessor
from ..pipeline.runner import Processed
from ..pipeline.session import make_renderer, open_sinks
from ..pipeline.sources import open_source
from ..pipeline.sources.base import Backoff
from ..pipeline.sources.loop import Looped
from ..pipeline.stats import PipelineStats
from ..runtime.sizes import padded_box
from .config import StreamSpec
from . import stamp
from .slots import LatestFrame, Mailbox

log = logging.getLogger(__name__)

STATES = ("starting", "running", "reconnecting", "ended", "failed", "stopped")
_RETRY_MAX_S = 8.0


@dataclass
class Job:
    """A preprocessed frame waiting in a mailbox for the batcher."""

    frame: Frame
    tensor: torch.Tensor  # H x W x 3 uint8: the frame at its network input size, padded to the server's one shape
    valid: tuple[int, int]  # the frame's part of ``tensor`` (top left): what the results are cropped to
    t_ready: float  # perf_counter() when it entered the mailbox


class Stream:
    """``start()`` the two threads, ``stop()`` them (the recording finalised); ``deliver`` is the batcher's
    hand-over. ``view`` may be changed at any time (the next frame is drawn that way)."""

    def __init__(self, spec: StreamSpec, cfg: RunConfig, meta: Any, box: tuple[int, int],
                 wake: threading.Event | None = None, stamp: bool = False) -> None:
        self.spec, self.cfg, self.meta = spec, cfg, meta
        self.stamp = stamp
        self.name = spec.name
        self.view = spec.view
        self.preprocess = Preprocessor(box)
        self.shape = padded_box(box)
        self.stats = PipelineStats()
        self.mailbox: Mailbox[Job] = Mailbox(on_put=wake)
        self.results: Mailbox[Processed] = Mailbox()
        self.latest = LatestFrame()
        self.state = "starting"
        self.error: str | None = None  # the last problem, one line (shown on the page and in the API)
        self.reconnects = 0
        self.source_description = ""
        self.fps: float | None = None
        self._stop = threading.Event()
        self._source: Any = None
        self._source_lock = threading.Lock()
        self._sinks: list[Any] = []
        self._sinks_ready = threading.Event()  # the render thread writes only once the recording is open
        self._stack = ExitStack()
        self._renderers: dict[str, Callable] = {}
        self._threads: list[threading.Thread] = []
        self.outputs: list[str] = []

    # -- control ------------------------------------------------------------------------------------------------
    def start(self) -> "Stream":
        for name, body in (("capture", self._capture), ("render", self._render)):
            t = threading.Thread(target=self._guarded(name, body), name=f"serve-{self.name}-{name}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads and finalise the recording; returns once they are done (or ``timeout`` passed)."""
        self._stop.set()
        with self._source_lock:
            if self._source is not None:
                self._source.close()  # ends a blocked read (a stalled stream) from this thread
        deadline = time.perf_counter() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.perf_counter()))
        self.latest.close()
        if self.state != "failed":
            self.state = "stopped"
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("stream %s: %s still running after %.0f s", self.name, ", ".join(stuck), timeout)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def up(self) -> bool:
        return self.state == "running"

    def deliver(self, processed: Processed) -> None:
        """The batcher's result for one of this stream's frames (never blocks: newest wins)."""
        self.results.put(processed)

    def _guarded(self, stage: str, body: Callable[[], None]) -> Callable[[], None]:
        def target() -> None:
            try:
                body()
            except BaseException as e:  # noqa: BLE001  -- a stream's failure stays the stream's
                log.debug("stream %s: %s failed", self.name, stage, exc_info=True)
                self.error = str(e) if isinstance(e, UserError) else f"{stage} failed: {type(e).__name__}: {e}"
                self.state = "failed"
                self._stop.set()
                self._sinks_ready.set()
        return target

    # -- capture ------------------------------------------------------------------------------------------------
    def _open(self) -> Any:
        open_ = lambda: open_source(self.spec.source, live=True, timeout_s=self.cfg.timeout_s,  # noqa: E731
                                    reconnect=True, decode_threads=1)
        return Looped(open_) if self.spec.loop else open_()

    def _capture(self) -> None:
        backoff = Backoff(0.5, _RETRY_MAX_S)
        first = True
        while not self._stop.is_set():
            try:
                source = self._open()
            except UserError as e:
                if first and self.spec.kind == "file":  # a missing or broken file will not come back
                    raise
                self._wait_retry(str(e), backoff)
                continue
            with self._source_lock:
                if self._stop.is_set():
                    source.close()
                    return
                self._source = source
            try:
                if first:
                    self._open_recording(source)
                elif self.state == "reconnecting":
                    self.reconnects += 1
                first = False
                self.source_description, self.fps = source.description, source.fps
                ended = self._read(source, backoff)
            finally:
                with self._source_lock:
                    self._source = None
                source.close()
            if ended:
                self.state = "ended"
                return

    def _read(self, source: Any, backoff: Backoff) -> bool:
        """Frames into the mailbox until the source ends (True) or fails (False: retried)."""
        frames = iter(source.frames())
        self.state, self.error = "running", None
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                if self.spec.kind in ("url", "camera"):  # a camera or network stream that ended: reopen it
                    self._wait_retry("the source ended", backoff)
                    return False
                return True
            except UserError as e:
                self._wait_retry(str(e), backoff)
                return False
            t1 = time.perf_counter()
            self.stats.add_stage("decode", t1 - t0)
            self.stats.frame_in()
            tensor, valid = self._fit(frame)
            t2 = time.perf_counter()
            self.stats.add_stage("preprocess", t2 - t1)
            backoff.reset()
            self.mailbox.put(Job(frame, tensor, valid, t2))
        return True

    def _fit(self, frame: Frame) -> tuple[torch.Tensor, tuple[int, int]]:
        """The frame at its network input size (aspect kept, as `run` fits it), edge-padded at the bottom and
        right to the server's one input shape, so that streams of any resolution share batches."""
        img = self.preprocess(frame).numpy()
        h, w = img.shape[:2]
        H, W = self.shape
        if (h, w) != (H, W):
            img = cv2.copyMakeBorder(img, 0, H - h, 0, W - w, cv2.BORDER_REPLICATE)
        return torch.from_numpy(img), (h, w)

    def _wait_retry(self, error: str, backoff: Backoff) -> None:
        self.state, self.error = "reconnecting", error
        log.warning("stream %s: %s; retrying", self.name, error)
        self._stop.wait(backoff.next())

    def _open_recording(self, source: Any) -> None:
        try:
            if self.cfg.outputs:
                self._sinks, _, self.outputs, _ = open_sinks(replace(self.cfg, audio=False), source, self._stack)
        finally:
            self._sinks_ready.set()

    # -- render -------------------------------------------------------------------------------------------------
    def _renderer(self, view: str) -> Callable:
        fn = self._renderers.get(view)
        if fn is None:
            fn = self._renderers[view] = make_renderer(replace(self.cfg, view=view), self.meta, None)
        return fn

    def _render(self) -> None:
        try:
            while not self._stop.is_set():
                p = self.results.take(timeout=0.25)
                if p is None:
                    continue
                t0 = time.perf_counter()
                hud: list[str] = []
                if self.cfg.hud:
                    fps, lat = self.stats.recent()
                    if fps is not None:
                        hud.append(f"{self.name}  {fps:5.1f} FPS   latency {lat:.0f} ms")
                rendered = self._renderer(self.view)(p, hud)
                if self.stamp:
                    stamp.paint(rendered, stamp.wall_ms(p.frame.t_capture))
                t1 = time.perf_counter()
                self.stats.add_stage("render", t1 - t0)
                self._sinks_ready.wait()
                for sink in self._sinks:
                    sink.write(p.frame, rendered)
                t2 = time.perf_counter()
                if self._sinks:
                    self.stats.add_stage("sink", t2 - t1)
                self.latest.publish(rendered, index=p.frame.index, t_capture=p.frame.t_capture)
                self.stats.frame_out(p.frame.t_capture, t2)
        finally:
            self._stack.close()  # the recording: finished and renamed into place, playable

    # -- reading ------------------------------------------------------------------------------------------------
    def total_reconnects(self) -> int:
        """Reopened by this stream, and by the source itself (a network stream reconnects within its timeout)."""
        source = self._source
        return self.reconnects + int(getattr(source, "reconnects", 0) or 0)

    def snapshot(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        snap["frames"]["dropped"] += self.mailbox.dropped + self.results.dropped
        snap["frames"]["dropped_by_stage"] = {"batcher": self.mailbox.dropped, "render": self.results.dropped}
        fps, lat = self.stats.recent()
        return {**snap, "name": self.name, "source": self.spec.source, "kind": self.spec.kind, "view": self.view,
                "loop": self.spec.loop, "state": self.state, "error": self.error,
                "reconnects": self.total_reconnects(),
                "description": self.source_description, "source_fps": self.fps, "outputs": list(self.outputs),
                "recent_fps": fps, "recent_latency_ms": lat, "mailbox": len(self.mailbox)}


def stack_batch(tensors: list[torch.Tensor], size: int) -> torch.Tensor:
    """The frames as one batch of ``size``, padded by repeating the last (a few fixed sizes, compiled once)."""
    pad = size - len(tensors)
    return torch.stack(tensors + [tensors[-1]] * pad) if pad > 0 else torch.stack(tensors)

