"""The :class:`Source` interface and the pieces several sources share: a close() that is safe from any
thread, pacing to presentation time, reconnection back-off and PyAV/OpenCV frame plumbing."""
from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any, TypeVar

import av
import cv2
import numpy as np

from ..frames import Frame

__all__ = ["END", "STOPPED", "Backoff", "DamageLog", "Guard", "Pacer", "Source", "decoded_frames", "make_frame",
           "quiet_opencv", "to_rgb"]

log = logging.getLogger(__name__)
# called with (packets lost, from_s, to_s) for each damaged stretch: the run's statistics (PipelineStats.damaged)
DamageCallback = Callable[[int, "float | None", "float | None"], None]

_T = TypeVar("_T")
STOPPED = object()  # sentinel: close() was called
END = object()  # sentinel: the decoder has no more frames
_CLOSE_WAIT_S = 2.0  # close() waits this long for a read in another thread before leaving the release to it
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 4.0


class Source(abc.ABC):
    """A stream of RGB frames. Use as a context manager; ``frames()`` yields :class:`Frame` objects."""

    live: bool = False  # live sources drop frames under load; lossless ones make the pipeline wait
    fps: float | None = None
    frame_count: int | None = None
    description: str = ""
    reconnects: int = 0
    path: str | None = None  # the input file, when there is one (the mp4 sink copies its audio)
    time_base: Fraction | None = None  # of Frame.pts_raw, when the source has container timestamps
    reopenable: bool = True  # False for a FIFO: read once, so nothing else (audio copy, a second pass) may open it
    on_damage: DamageCallback | None = None  # told of undecodable packets skipped (set before frames())
    width: int = 0  # of the frames, when known before the first (0: not known)
    height: int = 0
    decoder: str | None = None  # what decodes it ("h264 (software, 1 thread)", "h264_cuvid"), where it says
    has_audio: bool | None = None  # None: not known (an output copies the audio of ``path`` if it has any)
    files: tuple = ()  # the image files of an image source, in order (an image-folder output names its pictures)

    @abc.abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield the frames in order; raises SourceError when the input turns out to be damaged or lost."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the input. Idempotent; from another thread it also ends a running ``frames()``."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class Guard:
    """Lets ``close()`` come from any thread: a read and the release of the decoder never overlap.

    The reading thread holds the lock only for one read (never across a ``yield``) and checks ``stop``
    inside it, so it never touches a released container. ``close()`` sets ``stop`` and releases under the
    lock; if a read is stuck (a stalled network stream) it stops waiting after ``wait_s`` and the reader
    releases as soon as that read returns (network reads are bounded by their read timeout).
    """

    def __init__(self, release: Callable[[], None], wait_s: float = _CLOSE_WAIT_S) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._release = release
        self._wait_s = wait_s

    def call(self, fn: Callable[[], _T]) -> _T | object:
        """``fn()`` under the lock, or ``STOPPED`` (and the resource released) once close() was called."""
        with self._lock:
            if self.stop.is_set():
                self._release()
                return STOPPED
            return fn()

    def release(self) -> None:
        with self._lock:
            self._release()

    def close(self) -> None:
        self.stop.set()
        if self._lock.acquire(timeout=self._wait_s):
            try:
                self._release()
            finally:
                self._lock.release()


class Pacer:
    """Sleeps until each frame's presentation time, so a file or the synthetic world plays like a camera."""

    def __init__(self, stop: threading.Event, max_lag_s: float = 0.5) -> None:
        self._stop = stop
        self._max_lag_s = max_lag_s
        self._origin: float | None = None  # perf_counter() time of pts 0

    def wait(self, pts: float) -> bool:
        """Wait for ``pts`` (seconds); False when close() interrupted the wait."""
        now = time.perf_counter()
        if self._origin is None:
            self._origin = now - pts
        delay = self._origin + pts - now
        if delay > 0:
            return not self._stop.wait(delay)  # Event.wait: close() wakes it at once
        if -delay > self._max_lag_s:
            # the consumer stalled: a camera would have moved on, so re-anchor instead of bursting to catch up
            self._origin = now - pts
        return not self._stop.is_set()


class Backoff:
    """Exponential back-off for reconnections: 0.5 s, 1 s, 2 s, ... capped."""

    def __init__(self, first_s: float = _BACKOFF_FIRST_S, max_s: float = _BACKOFF_MAX_S) -> None:
        self._first = first_s
        self._max = max_s
        self._next = first_s

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2.0, self._max)
        return delay

    def reset(self) -> None:
        self._next = self._first


def make_frame(index: int, image: np.ndarray, pts: float | None, *, pts_raw: int | None = None,
               time_base: Fraction | None = None, name: str | None = None) -> Frame:
    """A :class:`Frame` captured now."""
    return Frame(index=index, image=image, pts=pts, t_capture=time.perf_counter(), pts_raw=pts_raw,
                 time_base=time_base, name=name)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or grey/BGRA) image as RGB uint8 H x W x 3."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# OpenCV's log level is process-wide: serialise our temporary changes to it (re-entrant: openers nest)
_CV_LOG_LOCK = threading.RLock()


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (probing cameras, bad images): we report one clear line instead."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:
        yield
        return
    with _CV_LOG_LOCK:
        old = logging_api.getLogLevel()
        logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
        try:
            yield
        finally:
            logging_api.setLogLevel(old)


class DamageLog:
    """Undecodable packets of a file, skipped the way FFmpeg skips them: how many, and where.

    A damaged stretch runs from the end of the last frame that decoded to the next one that does; each is said in
    one warning line (the first few; then one line at the end sums up) and passed to ``on_damage``."""

    MAX_LINES = 5
    MAX_SPANS = 32  # kept for the report; the count goes on

    def __init__(self, name: str, on_damage: DamageCallback | None = None) -> None:
        self.name = name
        self.on_damage = on_damage
        self.packets = 0
        self.spans: list[tuple[float | None, float | None, int]] = []  # (from_s, to_s, packets), the first ones
        self.spans_total = 0
        self.last_error = ""
        self._open = 0  # packets lost in the stretch not yet closed by a good frame
        self._from: float | None = None
        self._last_end: float | None = None

    def lost(self, error: BaseException) -> None:
        if not self._open:
            self._from = self._last_end if self._last_end is not None else 0.0
        self._open += 1
        self.packets += 1
        self.last_error = str(getattr(error, "strerror", None) or error)

    def good(self, start_s: float | None, end_s: float | None) -> None:
        """A frame decoded (its start and end, seconds): closes a damaged stretch."""
        if self._open:
            self._close(start_s)
        if end_s is not None:
            self._last_end = end_s

    def finish(self) -> None:
        if self._open:
            self._close(None)
        if self.spans_total > self.MAX_LINES:
            log.warning("video '%s': %d undecodable packets skipped in %d places in all", self.name, self.packets,
                        self.spans_total)

    def _close(self, until: float | None) -> None:
        n, start = self._open, self._from
        self._open = 0
        self.spans_total += 1
        if len(self.spans) < self.MAX_SPANS:
            self.spans.append((start, until, n))
        if self.spans_total <= self.MAX_LINES:
            where = f"between {start or 0.0:.2f} s and {until:.2f} s" if until is not None else \
                f"after {start or 0.0:.2f} s, to the end"
            log.warning("video '%s': %d undecodable packet%s skipped %s (damaged; the frames there are lost)",
                        self.name, n, "" if n == 1 else "s", where)
        if self.on_damage is not None:
            self.on_damage(n, start, until)


def decoded_frames(container: av.container.InputContainer, stream: av.VideoStream,
                   damage: DamageLog | None = None) -> Iterator[av.VideoFrame]:
    """Every decoded frame of ``stream``. ``damage``: a packet the decoder refuses is skipped and counted there
    (FFmpeg's own behaviour: the frames that decode are kept); without it the first decoding error ends the
    iteration. A demuxing error always does: the frames still inside the decoder (its reordering delay) are
    handed out first, then the error propagates."""
    try:
        for packet in container.demux(stream):
            if damage is None:
                yield from packet.decode()
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                damage.lost(e)
                continue
            yield from frames
    except (av.FFmpegError, OSError) as error:
        try:
            yield from stream.codec_context.decode(None)
        except (av.FFmpegError, OSError, ValueError):
            pass  # the decoder itself is broken: nothing to salvage
        raise error


def close_decoding(frames: Iterator | None, container: Any) -> None:
    """End the demux generator before its container goes away, then close the container (either may be None)."""
    if frames is not None:
        frames.close()
    if container is not None:
        container.close()
