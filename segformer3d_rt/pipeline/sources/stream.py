"""Network streams (rtsp/rtmp/http) through PyAV: bounded waits, reconnection, and timestamps that keep
increasing across drop-outs so the pipeline and the mp4 sink never see time go back."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from fractions import Fraction
from urllib.parse import urlsplit, urlunsplit

import av

from ...errors import SourceError
from ...runtime.clock import IncreasingClock, frame_ticks, rescale
from ..frames import Frame
from ..media import describe_fps, error_reason, stream_fps
from .base import END, STOPPED, Backoff, Guard, Source, close_decoding, decoded_frames, make_frame

__all__ = ["URL_SCHEMES", "StreamSource"]

log = logging.getLogger(__name__)

URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})
_MAX_READ_TIMEOUT_S = 5.0  # a stalled stream is declared dropped after this long (bounded by timeout_s)


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


class _StreamClock(IncreasingClock):
    """Output timestamps of a network stream, strictly increasing across reconnections.

    Within a connection the stream's own timestamps are kept (shifted by a constant); after a reconnection,
    or when they jump back, they are re-anchored to the wall clock: the next frame comes after the last one
    by the real time that passed (at least one frame). All in ticks of the first connection's time base.
    """

    def __init__(self, time_base: Fraction, fps: float | None) -> None:
        super().__init__(time_base, frame_ticks(Fraction(fps) if fps else None, time_base))
        self._offset: int | None = None
        self._last_wall = 0.0

    def rebase(self) -> None:
        self._offset = None

    def stamp(self, pts: int | None, time_base: Fraction | None) -> int:
        now = time.perf_counter()
        raw = None if pts is None or time_base is None else rescale(pts, time_base, self.time_base)
        if raw is not None and self._offset is not None and self.increases(raw + self._offset):
            out = raw + self._offset
        else:
            if self.last is None:
                out = raw if raw is not None else 0
            else:
                out = self.last + max(self.step, round((now - self._last_wall) / self.time_base))
            self._offset = None if raw is None else out - raw
        self._last_wall = now
        return self.commit(out)


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
        self._guard = Guard(self._release)
        container = self._connect_until(time.perf_counter() + self._timeout_s, first=True)
        assert container is not None  # nothing can have called close() yet
        self._container = container
        stream = container.streams.video[0]
        self.time_base = stream.time_base or Fraction(1, 90000)
        self.fps = stream_fps(stream)
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
        self.description = f"stream {self.shown} {stream.width}x{stream.height} {describe_fps(self.fps)}"

    # -- connections ---------------------------------------------------------------------------------------------
    def _open_once(self, open_s: float) -> av.container.InputContainer:
        container = av.open(self.url, timeout=(open_s, self._read_s), options=dict(self._options))
        if not container.streams.video:
            container.close()
            raise SourceError(f"stream {self.shown} has no video stream")
        return container

    def _connect_until(self, deadline: float, *, first: bool) -> av.container.InputContainer | None:
        """Connect, retrying with back-off until ``deadline``; None when close() was called meanwhile."""
        backoff = Backoff()
        while True:
            open_s = max(0.2, deadline - time.perf_counter())
            try:
                return self._open_once(open_s)
            except (av.FFmpegError, OSError) as e:
                reason = error_reason(e, open_s)
            left = deadline - time.perf_counter()
            if not self._reconnect or left <= 0:
                if first:
                    raise SourceError(f"cannot reach {self.shown}: {reason}")
                raise SourceError(f"lost stream {self.shown}: could not reconnect within {self._timeout_s:g} s "
                                  f"({reason})")
            # the last wait is cut short for one more try at the deadline: the timeout is the time really tried
            if self._guard.stop.wait(min(backoff.next(), left)):
                return None

    def _release(self) -> None:
        close_decoding(self._frames_it, self._container)
        self._frames_it = self._container = None

    def close(self) -> None:
        self._guard.close()

    def _install(self, container: av.container.InputContainer) -> bool:
        def put() -> bool:
            self._container = container
            return True

        if self._guard.call(put) is STOPPED:
            container.close()
            return False
        return True

    def _start(self) -> Iterator[av.VideoFrame]:
        assert self._container is not None
        # no decoder threads here: frame threading adds a frame of latency per thread
        self._frames_it = decoded_frames(self._container, self._container.streams.video[0])
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
                if it is STOPPED:
                    return
                reason: str | None = None
                while True:
                    try:
                        item = self._guard.call(lambda: next(it, END))
                    except (av.FFmpegError, OSError) as e:
                        reason = error_reason(e, self._read_s)
                        break
                    if item is STOPPED:
                        return
                    if item is END:
                        reason = "the stream ended"
                        break
                    conn_s = float(item.pts * item.time_base) if item.pts is not None and item.time_base else None
                    # an RTSP session's first frame has no pts (no RTCP report yet): while resuming, a frame we
                    # cannot place is the restarted file's start, already delivered
                    if skip_to is not None and (conn_s is None or conn_s <= skip_to + 1e-6):
                        continue
                    skip_to = None
                    pts_raw = clock.stamp(item.pts, item.time_base)
                    frame = make_frame(index, item.to_ndarray(format="rgb24"), float(pts_raw * self.time_base),
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
