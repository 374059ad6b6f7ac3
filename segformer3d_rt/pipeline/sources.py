"""Frame sources: video files, cameras, network streams, images and the synthetic world.

Every source turns its input into :class:`~segformer3d_rt.pipeline.frames.Frame` objects (RGB uint8,
index from 0) and reports bad input as a one-line :class:`~segformer3d_rt.errors.SourceError`::

    with open_source("clip.mp4") as source:
        for frame in source.frames():
            ...

``open_source`` picks the kind from the spec: ``synthetic:...``, an ``rtsp://``/``rtmp://``/``http(s)://``
URL, a camera index (``"0"``) or ``/dev/videoN``, an image file or a directory of images, else a video file.
``close()`` may be called from any thread: iteration then ends quietly (see :class:`_Guard`).
"""
from __future__ import annotations

import abc
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import av
import cv2
import numpy as np

from ..errors import SourceError
from .frames import Frame

__all__ = [
    "IMAGE_SUFFIXES", "URL_SCHEMES", "CameraSource", "ImageSource", "Source", "StreamSource", "SyntheticSource",
    "VideoFileSource", "open_source",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pbm",
                            ".pgm", ".ppm", ".pnm"})
URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})

_T = TypeVar("_T")
_STOPPED = object()  # sentinel: close() was called
_END = object()  # sentinel: the decoder has no more frames
_CLOSE_WAIT_S = 2.0  # close() waits this long for a read in another thread before leaving the release to it
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 4.0
_MAX_READ_TIMEOUT_S = 5.0  # a stalled stream is declared dropped after this long (bounded by timeout_s)
_COUNT_BUDGET_S = 2.0  # time allowed to count a file's frames by demuxing when its header has no count
_CAMERA_RE = re.compile(r"/dev/video\d+")


# ---------------------------------------------------------------------------------------------------------------
# base class and shared helpers
# ---------------------------------------------------------------------------------------------------------------
class Source(abc.ABC):
    """A stream of RGB frames. Use as a context manager; ``frames()`` yields :class:`Frame` objects."""

    live: bool = False  # live sources drop frames under load; lossless ones make the pipeline wait
    fps: float | None = None
    frame_count: int | None = None
    description: str = ""
    reconnects: int = 0
    path: str | None = None  # the input file, when there is one (the mp4 sink copies its audio)
    time_base: Fraction | None = None  # of Frame.pts_raw, when the source has container timestamps

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


class _Guard:
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
        """``fn()`` under the lock, or ``_STOPPED`` (and the resource released) once close() was called."""
        with self._lock:
            if self.stop.is_set():
                self._release()
                return _STOPPED
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


class _Pacer:
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


class _Backoff:
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


def _frame(index: int, image: np.ndarray, pts: float | None, *, pts_raw: int | None = None,
           time_base: Fraction | None = None, name: str | None = None) -> Frame:
    return Frame(index=index, image=image, pts=pts, t_capture=time.perf_counter(), pts_raw=pts_raw,
                 time_base=time_base, name=name)


def _reason(error: BaseException, timeout_s: float | None = None) -> str:
    """A short human reason for an FFmpeg/OS error (without PyAV's repeated file name)."""
    if isinstance(error, av.error.ExitError):  # PyAV's interrupt callback fired: our timeout
        return f"no data within {timeout_s:g} s" if timeout_s else "timed out"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).rstrip(".")


def _fmt_fps(fps: float | None) -> str:
    return f"{fps:.3g} fps" if fps else "unknown fps"


def _rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or grey/BGRA) image as RGB uint8 H x W x 3."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# OpenCV's log level is process-wide: serialise our temporary changes to it (re-entrant: openers nest)
_CV_LOG_LOCK = threading.RLock()


@contextmanager
def _quiet_opencv() -> Iterator[None]:
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


def _decoded(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Every decoded frame of ``stream``. On an error the frames still inside the decoder (its reordering
    delay) are handed out first, then the error propagates."""
    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except (av.FFmpegError, OSError) as error:
        try:
            yield from stream.codec_context.decode(None)
        except (av.FFmpegError, OSError, ValueError):
            pass  # the decoder itself is broken: nothing to salvage
        raise error


# ---------------------------------------------------------------------------------------------------------------
# video files
# ---------------------------------------------------------------------------------------------------------------
def _open_hw(path: str) -> tuple[av.container.InputContainer | None, str]:
    """Try NVIDIA decoding (PyAV's CUDA hwaccel; frames come back to host memory as they are read).
    Returns (container or None, what happened) so the caller can say which decoder runs."""
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if "cuda" not in hwdevices_available():
        return None, "this FFmpeg build has no CUDA hwaccel"
    try:
        container = av.open(path, hwaccel=HWAccel("cuda", allow_software_fallback=True))
        stream = container.streams.video[0] if container.streams.video else None
    except (av.FFmpegError, OSError) as e:
        return None, f"CUDA decode unavailable: {_reason(e)}"
    if stream is None or not stream.codec_context.is_hwaccel:
        container.close()
        return None, "CUDA decode unavailable for this stream"
    return container, "CUDA (NVDEC)"


def _open_video(path: str, hwaccel: bool = False) -> av.container.InputContainer:
    """Open ``path`` with PyAV and check it has a decodable video stream (SourceError otherwise).
    ``hwaccel``: try NVIDIA decoding first, falling back to FFmpeg's software decoder."""
    what = f"cannot open video '{path}'"
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{what}: file not found")
    if p.is_dir():
        raise SourceError(f"{what}: it is a directory")
    if hwaccel:
        container, note = _open_hw(path)
        if container is not None:
            log.info("decode: %s", note)
            return container
        log.info("decode: software (%s)", note)
    try:
        container = av.open(path)
    except av.error.InvalidDataError:
        raise SourceError(f"{what}: not a video file, or damaged beyond opening (FFmpeg cannot read it)") from None
    except PermissionError:
        raise SourceError(f"{what}: permission denied") from None
    except (av.FFmpegError, OSError) as e:
        raise SourceError(f"{what}: {_reason(e)}") from None
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise SourceError(f"{what}: it has no video stream (it contains {', '.join(kinds)})")
        stream = container.streams.video[0]
        # FFmpeg happily "decodes" text files as ANSI art: that is not a video
        if container.format.name == "tty" or stream.codec_context.name == "ansi":
            raise SourceError(f"{what}: not a video file (it looks like text)")
        if not stream.width or not stream.height:
            raise SourceError(f"{what}: its video stream has no picture size (damaged header?)")
    except BaseException:
        container.close()
        raise
    return container


def _count_packets(path: str, stream_index: int, budget_s: float = _COUNT_BUDGET_S) -> int | None:
    """Frames of a video stream counted by demuxing (no decoding); None when it takes too long or fails."""
    deadline = time.perf_counter() + budget_s
    n = 0
    try:
        with av.open(path) as container:
            for packet in container.demux(container.streams[stream_index]):
                n += packet.size > 0  # the final flush packets are empty
                if time.perf_counter() > deadline:
                    return None
    except (av.FFmpegError, OSError):
        return None
    return n


class VideoFileSource(Source):
    """A video file decoded with PyAV (threaded decoding), every frame in order with its exact timestamps."""

    def __init__(self, path: str | Path, *, live: bool = False, hwaccel: bool = False,
                 decode_threads: int = 0) -> None:
        self.path = str(path)
        self.live = live
        self._decode_threads = decode_threads
        self.reconnects = 0
        self._name = Path(self.path).name
        self._hwaccel = hwaccel
        self._container: av.container.InputContainer | None = _open_video(self.path, hwaccel)
        self.decoder = "CUDA (NVDEC)" if self._container.streams.video[0].codec_context.is_hwaccel else (
            f"{self._container.streams.video[0].codec_context.name} (software)")
        self._frames_it: Iterator[av.VideoFrame] | None = None
        self._guard = _Guard(self._release)
        stream = self._container.streams.video[0]
        self.time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else None
        self.width, self.height = stream.width, stream.height
        # frames the container's index promises (mp4/mov/avi); used to notice a silently truncated file
        self._header_frames = stream.frames if stream.frames > 0 else None
        self._expected_end_s: float | None = None
        if self._header_frames and stream.duration and self.time_base:
            self._expected_end_s = float(((stream.start_time or 0) + stream.duration) * self.time_base)
        self.frame_count = self._header_frames or _count_packets(self.path, stream.index)
        count = f"{self.frame_count} frames" if self.frame_count else "unknown length"
        self.description = f"video {self._name} {self.width}x{self.height} {_fmt_fps(self.fps)} {count}"

    def _release(self) -> None:
        if self._frames_it is not None:
            self._frames_it.close()  # end the demux generator before its container goes away
            self._frames_it = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def close(self) -> None:
        self._guard.close()

    def _start(self) -> Iterator[av.VideoFrame]:
        if self._container is None:  # a second pass: open the file again
            self._container = _open_video(self.path, self._hwaccel)
        stream = self._container.streams.video[0]
        stream.codec_context.thread_count = self._decode_threads
        if self._decode_threads != 1:
            # frame+slice threads (files only, where their latency does not matter): more frames per second,
            # but ~50% more CPU per frame (720p H.264: 8.1 vs 5.3 ms), a loss when the cores are all busy
            stream.thread_type = "AUTO"
        self._frames_it = _decoded(self._container, stream)
        return self._frames_it

    def frames(self) -> Iterator[Frame]:
        it = self._guard.call(self._start)
        if it is _STOPPED:
            return
        pacer = _Pacer(self._guard.stop) if self.live else None
        index, last_end = 0, None
        try:
            while True:
                try:
                    item = self._guard.call(lambda: next(it, _END))
                except (av.FFmpegError, OSError) as e:
                    where = f" after {last_end:.2f} s" if last_end is not None else " at the start"
                    raise SourceError(self._damage(index, f"{_reason(e)}{where}")) from e
                if item is _STOPPED:
                    return
                if item is _END:
                    break
                frame = self._convert(index, item)
                last_end = (frame.pts or 0.0) + self._span_s(item)
                if pacer is not None and frame.pts is not None and not pacer.wait(frame.pts):
                    return
                frame.t_capture = time.perf_counter()
                yield frame
                index += 1
            problem = self._shortfall(index, last_end)
            if problem:
                raise SourceError(self._damage(index, problem))
        finally:
            self._guard.release()

    def _convert(self, index: int, av_frame: av.VideoFrame) -> Frame:
        image = av_frame.to_ndarray(format="rgb24")
        if av_frame.pts is None:  # e.g. raw elementary streams: derive the time from the frame rate
            return _frame(index, image, index / self.fps if self.fps else None)
        time_base = av_frame.time_base or self.time_base
        return _frame(index, image, float(av_frame.pts * time_base), pts_raw=int(av_frame.pts), time_base=time_base)

    def _span_s(self, av_frame: av.VideoFrame) -> float:
        """How long a frame is shown (its duration, else one frame period)."""
        if av_frame.duration and av_frame.time_base:
            return float(av_frame.duration * av_frame.time_base)
        return 1.0 / self.fps if self.fps else 0.0

    def _shortfall(self, decoded: int, last_end: float | None) -> str | None:
        """Why the file ended before its header said it would, or None. FFmpeg stops silently at the end of a
        truncated mp4, so compare with the index: time first (an edit list may legitimately drop a few leading
        frames), the frame count when the header has no duration."""
        if not self._header_frames or decoded >= self._header_frames:
            return None
        if decoded == 0 or last_end is None:
            return "no frame could be decoded (the file is truncated or damaged)"
        if self._expected_end_s is not None:
            slack = 1.5 / self.fps if self.fps else 0.1
            if last_end >= self._expected_end_s - slack:
                return None
            return (f"the file is truncated (frames stop at {last_end:.2f} s, "
                    f"the container says {self._expected_end_s:.2f} s)")
        return f"the file is truncated (the container lists {self._header_frames} frames)"

    def _damage(self, decoded: int, reason: str) -> str:
        of = f" of {self.frame_count}" if self.frame_count else ""
        return f"video '{self._name}' ended early: decoded {decoded}{of} frames, then: {reason}"


# ---------------------------------------------------------------------------------------------------------------
# cameras
# ---------------------------------------------------------------------------------------------------------------
def _default_capture(device: int | str) -> cv2.VideoCapture:
    # V4L2 on Linux: CAP_ANY would also try FFmpeg and other backends, each printing its own failure
    backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    cap = cv2.VideoCapture(device, backend)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones (lower latency)
    return cap


def _camera_hint(device: int | str) -> str:
    """Why a camera may not open, when it is obvious (no device node)."""
    if isinstance(device, int) and sys.platform.startswith("linux") and not Path(f"/dev/video{device}").exists():
        return f" (there is no /dev/video{device})"
    if isinstance(device, str) and not Path(device).exists():
        return " (no such device)"
    return ""


class CameraSource(Source):
    """A camera through OpenCV (index or /dev/videoN). Read failures reopen it with back-off.

    ``opener`` builds the ``cv2.VideoCapture`` (default: the device through V4L2 on Linux); tests and other
    backends can pass their own. Timestamps are seconds since the first frame (the capture clock).
    """

    def __init__(self, device: int | str, *, live: bool = True, timeout_s: float = 10.0, reconnect: bool = True,
                 opener: Callable[[], cv2.VideoCapture] | None = None) -> None:
        self.live = live
        self.reconnects = 0
        self.label = str(device)
        self._timeout_s = float(timeout_s)
        self._reconnect = reconnect
        self._opener = opener or (lambda: _default_capture(device))
        self._guard = _Guard(self._release)
        self._cap: cv2.VideoCapture | None = self._open_capture()
        if self._cap is None:
            raise SourceError(f"camera {self.label} could not be opened{_camera_hint(device)}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.description = f"camera {self.label} {w}x{h} {_fmt_fps(self.fps)}"

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._guard.close()

    def _open_capture(self) -> cv2.VideoCapture | None:
        """An opened capture, or None (OpenCV reports failure by a closed capture or, rarely, an exception)."""
        try:
            with _quiet_opencv():
                cap = self._opener()
        except cv2.error:
            return None
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        try:
            ok, image = self._cap.read()
        except cv2.error:
            return None
        return image if ok and image is not None and image.size else None

    def _reopen(self) -> bool:
        self._release()
        self._cap = self._open_capture()
        return self._cap is not None

    def frames(self) -> Iterator[Frame]:
        index, t0, last_pts = 0, None, -1.0
        last_ok = time.perf_counter()  # a missing camera gives up timeout_s after the last frame (or the start)
        backoff = _Backoff()
        warned = False
        try:
            while True:
                image = self._guard.call(self._read)
                if image is _STOPPED:
                    return
                if image is not None:
                    now = time.perf_counter()
                    t0 = now if t0 is None else t0
                    last_pts = max(now - t0, last_pts + 1e-6)  # strictly increasing even on a coarse clock
                    last_ok, warned = now, False
                    backoff.reset()
                    yield _frame(index, _rgb(image), last_pts)
                    index += 1
                    continue
                if not self._reconnect:
                    raise SourceError(f"camera {self.label} stopped delivering frames")
                if not warned:
                    log.warning("camera %s: no frame; reopening it (giving up after %g s)", self.label, self._timeout_s)
                    warned = True
                delay = backoff.next()
                if time.perf_counter() + delay - last_ok > self._timeout_s:
                    raise SourceError(f"camera {self.label} delivered no frames for {self._timeout_s:g} s "
                                      "and could not be reopened")
                if self._guard.stop.wait(delay):
                    return
                reopened = self._guard.call(self._reopen)
                if reopened is _STOPPED:
                    return
                if reopened:
                    self.reconnects += 1
        finally:
            self._guard.release()


# ---------------------------------------------------------------------------------------------------------------
# network streams
# ---------------------------------------------------------------------------------------------------------------
def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return url


class _StreamClock:
    """Output timestamps of a network stream, strictly increasing across reconnections.

    Within a connection the stream's own timestamps are kept (shifted by a constant); after a reconnection,
    or when they jump back, they are re-anchored to the wall clock: the next frame comes after the last one
    by the real time that passed (at least one frame). All in ticks of the first connection's time base.
    """

    def __init__(self, time_base: Fraction, fps: float | None) -> None:
        self.time_base = time_base
        self._step = max(1, round(1 / (Fraction(fps) * time_base))) if fps else 1
        self._offset: int | None = None
        self._last: int | None = None
        self._last_wall = 0.0

    def rebase(self) -> None:
        self._offset = None

    def stamp(self, pts: int | None, time_base: Fraction | None) -> int:
        now = time.perf_counter()
        raw = None if pts is None or time_base is None else round(pts * time_base / self.time_base)
        if raw is not None and self._offset is not None and raw + self._offset > self._last:
            out = raw + self._offset
        else:
            if self._last is None:
                out = raw if raw is not None else 0
            else:
                out = self._last + max(self._step, round((now - self._last_wall) / self.time_base))
            self._offset = None if raw is None else out - raw
        self._last, self._last_wall = out, now
        return out


class StreamSource(Source):
    """rtsp/rtmp/http(s) through PyAV: open and read timeouts, no decoder threads (latency), and reconnection
    with exponential back-off when the stream drops. Indices continue and timestamps stay increasing across
    reconnections. A stream with a known duration (a file served over the network) ends normally at its end
    and, after a drop-out, resumes after the last frame it delivered."""

    def __init__(self, url: str, *, live: bool = True, timeout_s: float = 10.0, reconnect: bool = True) -> None:
        if not timeout_s > 0:
            raise SourceError(f"timeout must be positive, got {timeout_s}")
        self.url = url
        self.shown = _redact(url)
        self.live = live
        self.reconnects = 0
        self._timeout_s = float(timeout_s)
        self._read_s = min(self._timeout_s, _MAX_READ_TIMEOUT_S)
        self._reconnect = reconnect
        self._options = {"rtsp_transport": "tcp"} if urlsplit(url).scheme.lower().startswith("rtsp") else {}
        self._container: av.container.InputContainer | None = None
        self._frames_it: Iterator[av.VideoFrame] | None = None
        self._guard = _Guard(self._release)
        container = self._connect_until(time.perf_counter() + self._timeout_s, first=True)
        assert container is not None  # nothing can have called close() yet
        self._container = container
        stream = container.streams.video[0]
        self.time_base = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else None
        # the end time of a finite stream (a file served over the network); None for live streams
        self._duration_s: float | None = None
        length: float | None = None
        if stream.duration and stream.time_base:
            length = float(stream.duration * stream.time_base)
            self._duration_s = float((stream.start_time or 0) * stream.time_base) + length
        elif container.duration:
            length = container.duration / av.time_base
            self._duration_s = (container.start_time or 0) / av.time_base + length
        if stream.frames > 0:
            self.frame_count = stream.frames
        elif length and self.fps:
            self.frame_count = round(length * self.fps)
        self.description = f"stream {self.shown} {stream.width}x{stream.height} {_fmt_fps(self.fps)}"

    # -- connections ---------------------------------------------------------------------------------------------
    def _open_once(self, open_s: float) -> av.container.InputContainer:
        container = av.open(self.url, timeout=(open_s, self._read_s), options=dict(self._options))
        if not container.streams.video:
            container.close()
            raise SourceError(f"stream {self.shown} has no video stream")
        return container

    def _connect_until(self, deadline: float, *, first: bool) -> av.container.InputContainer | None:
        """Connect, retrying with back-off until ``deadline``; None when close() was called meanwhile."""
        backoff = _Backoff()
        while True:
            open_s = max(0.2, deadline - time.perf_counter())
            try:
                return self._open_once(open_s)
            except (av.FFmpegError, OSError) as e:
                reason = _reason(e, open_s)
            delay = backoff.next()
            if not self._reconnect or time.perf_counter() + delay > deadline:
                if first:
                    raise SourceError(f"cannot reach {self.shown}: {reason}")
                raise SourceError(f"lost stream {self.shown}: could not reconnect within {self._timeout_s:g} s "
                                  f"({reason})")
            if self._guard.stop.wait(delay):
                return None

    def _release(self) -> None:
        if self._frames_it is not None:
            self._frames_it.close()
            self._frames_it = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def close(self) -> None:
        self._guard.close()

    def _install(self, container: av.container.InputContainer) -> bool:
        def put() -> bool:
            self._container = container
            return True

        if self._guard.call(put) is _STOPPED:
            container.close()
            return False
        return True

    def _start(self) -> Iterator[av.VideoFrame]:
        assert self._container is not None
        # no decoder threads here: frame threading adds a frame of latency per thread
        self._frames_it = _decoded(self._container, self._container.streams.video[0])
        return self._frames_it

    # -- frames --------------------------------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        clock = _StreamClock(self.time_base, self.fps)
        index = 0
        deadline: float | None = None  # set by a drop-out, cleared by the next frame
        skip_to: float | None = None  # after reconnecting to a finite stream: seconds already delivered
        last_conn_s: float | None = None  # the connection's own time of the last frame delivered
        try:
            while not self._guard.stop.is_set():
                if self._container is None:
                    if deadline is None:
                        deadline = time.perf_counter() + self._timeout_s
                    container = self._connect_until(deadline, first=index == 0)
                    if container is None or not self._install(container):
                        return
                    self.reconnects += 1
                    if self._duration_s is not None and last_conn_s is not None:
                        skip_to = last_conn_s  # the server restarts the file: skip what was delivered
                    else:
                        clock.rebase()
                    log.warning("stream %s: reconnected (%d so far)", self.shown, self.reconnects)
                it = self._guard.call(self._start)
                if it is _STOPPED:
                    return
                reason: str | None = None
                while True:
                    try:
                        item = self._guard.call(lambda: next(it, _END))
                    except (av.FFmpegError, OSError) as e:
                        reason = _reason(e, self._read_s)
                        break
                    if item is _STOPPED:
                        return
                    if item is _END:
                        reason = "the stream ended"
                        break
                    conn_s = float(item.pts * item.time_base) if item.pts is not None and item.time_base else None
                    if skip_to is not None and conn_s is not None and conn_s <= skip_to + 1e-6:
                        continue
                    skip_to = None
                    pts_raw = clock.stamp(item.pts, item.time_base)
                    frame = _frame(index, item.to_ndarray(format="rgb24"), float(pts_raw * self.time_base),
                                   pts_raw=pts_raw, time_base=self.time_base)
                    last_conn_s, deadline = conn_s, None
                    yield frame
                    index += 1
                self._guard.release()  # this connection is done either way
                if reason == "the stream ended" and (self._finished(last_conn_s) or not self._reconnect):
                    return
                if not self._reconnect:
                    raise SourceError(f"lost stream {self.shown}: {reason}")
                log.warning("stream %s dropped (%s); reconnecting", self.shown, reason)
        finally:
            self._guard.release()

    def _finished(self, last_conn_s: float | None) -> bool:
        """A finite stream (known duration) that reached its end: no reconnection."""
        if self._duration_s is None or last_conn_s is None:
            return False
        slack = 2.0 / self.fps if self.fps else 0.1
        return last_conn_s >= self._duration_s - slack


# ---------------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------------
def _natural_key(name: str) -> list[tuple[int, Any, str]]:
    """Sort key where 'img2' comes before 'img10'."""
    return [(0, int(part), part) if part.isdigit() else (1, part.lower(), part) for part in re.split(r"(\d+)", name)]


def _read_image(path: Path) -> np.ndarray | None:
    """RGB uint8 H x W x 3, or None when the file cannot be read or decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # + imdecode: also works for non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    with _quiet_opencv():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # 8-bit 3-channel, EXIF orientation applied
    return None if image is None else _rgb(image)


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class ImageSource(Source):
    """One image file, or the images of a directory in natural name order (not recursive).

    Files that are not images are skipped with one warning; images that cannot be decoded are skipped with
    a warning each. ``Frame.name`` is the file name; there are no timestamps.
    """

    def __init__(self, path: str | Path, *, live: bool = False) -> None:
        p = Path(path)
        self.path = None  # not a video: nothing for the mp4 sink to take audio from
        self.live = live
        self.reconnects = 0
        self._stop = threading.Event()
        self._first: np.ndarray | None = None  # a single image is decoded at open, to fail early
        if p.is_dir():
            files = sorted((f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")),
                           key=lambda f: _natural_key(f.name))
            self._files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
            others = [f.name for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
            if not self._files:
                detail = f" (only other files: {_listing(others)})" if others else ": it is empty"
                raise SourceError(f"no images in directory '{path}'{detail}")
            if others:
                log.warning("skipping %d non-image file%s in %s: %s", len(others), "s" * (len(others) > 1), path,
                            _listing(others, 20))
            self.description = f"images {p.name or path}/ {len(self._files)} files"
        elif p.is_file():
            self._first = _read_image(p)
            if self._first is None:
                raise SourceError(f"cannot read image '{path}': not a valid image file")
            self._files = [p]
            h, w = self._first.shape[:2]
            self.description = f"image {p.name} {w}x{h}"
        else:
            raise SourceError(f"cannot open image '{path}': file not found")
        self.frame_count = len(self._files)

    def close(self) -> None:
        self._stop.set()
        self._first = None

    def frames(self) -> Iterator[Frame]:
        index = 0
        for file in self._files:
            if self._stop.is_set():
                return
            image = self._first if self._first is not None else _read_image(file)
            if image is None:
                log.warning("skipping unreadable image %s", file.name)
                continue
            yield _frame(index, image, None, name=file.name)
            index += 1
        if index == 0:
            raise SourceError(f"none of the {len(self._files)} images in '{self._files[0].parent}' could be read")


# ---------------------------------------------------------------------------------------------------------------
# synthetic world
# ---------------------------------------------------------------------------------------------------------------
def _parse_synthetic(spec: str) -> dict[str, Any]:
    """'synthetic:seed=3,size=512x256,fps=25,frames=250' -> keyword arguments (SourceError when malformed)."""
    opts: dict[str, Any] = {"seed": 0, "width": 512, "height": 256, "fps": 25.0, "frames": None}
    body = spec.split(":", 1)[1] if ":" in spec else ""
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            if not sep:
                raise ValueError
            if key == "seed":
                opts["seed"] = int(value)
            elif key == "size":
                w, h = value.lower().split("x")
                opts["width"], opts["height"] = int(w), int(h)
                if opts["width"] < 8 or opts["height"] < 8:
                    raise ValueError
            elif key == "fps":
                opts["fps"] = float(value)
                if not 0 < opts["fps"] < 1000:
                    raise ValueError
            elif key == "frames":
                opts["frames"] = int(value)
                if opts["frames"] < 1:
                    raise ValueError
            else:
                raise SourceError(f"synthetic source: unknown option '{key}' (use seed, size=WxH, fps, frames)")
        except ValueError:
            raise SourceError(f"synthetic source: bad option '{item}' (e.g. seed=3,size=512x256,fps=25,frames=250)"
                              ) from None
    return opts


class SyntheticSource(Source):
    """Frames rendered by :class:`segformer3d_rt.data.synthetic.SyntheticWorld` (deterministic per seed)."""

    def __init__(self, *, seed: int = 0, width: int = 512, height: int = 256, fps: float = 25.0,
                 frames: int | None = None, live: bool = False) -> None:
        try:  # lazily: the renderer is only needed for this source
            from ..data.synthetic import SyntheticWorld
        except ImportError as e:
            raise SourceError(f"synthetic source unavailable: {e}") from e
        self.live = live
        self.reconnects = 0
        self.fps = float(fps)
        self.frame_count = frames
        # exact rational frame period, so pts_raw is the frame index (29.97 -> 100/2997)
        self.time_base = 1 / Fraction(self.fps).limit_denominator(1_000_000)
        self._world = SyntheticWorld(seed=seed, height=height, width=width, fps=self.fps)
        self._stop = threading.Event()
        length = f"{frames} frames" if frames else "unlimited"
        self.description = f"synthetic seed={seed} {width}x{height} {_fmt_fps(self.fps)} {length}"

    @classmethod
    def from_spec(cls, spec: str, *, live: bool = False) -> SyntheticSource:
        return cls(**_parse_synthetic(spec), live=live)

    def close(self) -> None:
        self._stop.set()

    def frames(self) -> Iterator[Frame]:
        pacer = _Pacer(self._stop) if self.live else None
        index = 0
        while (self.frame_count is None or index < self.frame_count) and not self._stop.is_set():
            image = self._world.render(index).image
            pts = float(index * self.time_base)
            if pacer is not None and not pacer.wait(pts):
                return
            yield _frame(index, image, pts, pts_raw=index, time_base=self.time_base)
            index += 1


# ---------------------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------------------
def _scheme(spec: str) -> str:
    try:
        return urlsplit(spec).scheme.lower()
    except ValueError:  # e.g. a malformed IPv6 host: not a URL we can use
        return ""


def open_source(spec: str, *, live: bool | None = None, timeout_s: float = 10.0, reconnect: bool = True,
                hwaccel: bool = False, decode_threads: int = 0) -> Source:
    """Open a frame source.

    ``spec``: a video file path; a camera index ("0") or device path (/dev/video0); an rtsp://, rtmp://,
    http(s):// URL; an image file or a directory of images; "synthetic:" or
    "synthetic:seed=3,size=512x256,fps=25,frames=250" (size is WxH).
    ``live``: None picks the kind's default (cameras and URLs live, the rest lossless); a file or the
    synthetic world opened live is paced at its frame rate like a camera.
    ``timeout_s``: open/read timeout of cameras and streams, and how long they may try to reconnect.
    ``hwaccel``: video files try NVIDIA decoding first (a log line says which decoder runs).
    ``decode_threads``: video files' decoder threads (0: FFmpeg's choice, 1: none beside the caller's).
    Raises SourceError (one line) when the input cannot be opened.
    """
    spec = str(spec)
    kw: dict[str, Any] = {} if live is None else {"live": live}
    if spec.lower() == "synthetic" or spec.lower().startswith("synthetic:"):
        return SyntheticSource.from_spec(spec, **kw)
    if _scheme(spec) in URL_SCHEMES:
        return StreamSource(spec, timeout_s=timeout_s, reconnect=reconnect, **kw)
    if spec.isdigit():  # a camera index wins over a file that happens to be called "0"
        return CameraSource(int(spec), timeout_s=timeout_s, reconnect=reconnect, **kw)
    if _CAMERA_RE.fullmatch(spec):
        return CameraSource(spec, timeout_s=timeout_s, reconnect=reconnect, **kw)
    path = Path(spec).expanduser()
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, **kw)
    return VideoFileSource(path, hwaccel=hwaccel, decode_threads=decode_threads, **kw)
