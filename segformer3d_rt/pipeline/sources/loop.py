"""A file played over and over (`serve`'s looped streams): each pass reopens it; frame indices keep counting."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ..frames import Frame
from .base import Source


class Looped(Source):
    """``open_()`` again whenever the source it gave ends; ``close()`` from any thread ends the loop."""

    def __init__(self, open_: Callable[[], Source]) -> None:
        self._open = open_
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.inner = open_()
        for name in ("live", "fps", "description", "path", "time_base", "reopenable", "width", "height",
                     "decoder", "has_audio"):
            setattr(self, name, getattr(self.inner, name))
        self.description = f"{self.inner.description} (looped)"
        self.frame_count = None  # endless
        self.passes = 0

    def frames(self) -> Iterator[Frame]:
        index = 0
        offset_s, offset_raw = 0.0, 0  # where this pass starts on the timeline: timestamps keep increasing
        while not self._stop.is_set():
            got = 0
            last_s, last_raw, step_s, step_raw = None, None, 1.0 / (self.fps or 25.0), None
            for frame in self.inner.frames():
                frame.index = index
                index += 1
                got += 1
                if frame.pts is not None:
                    if last_s is not None:
                        step_s = frame.pts - last_s
                    last_s = frame.pts
                    frame.pts += offset_s
                if frame.pts_raw is not None:
                    if last_raw is not None:
                        step_raw = frame.pts_raw - last_raw
                    last_raw = frame.pts_raw
                    frame.pts_raw += offset_raw
                yield frame
            if last_s is not None:
                offset_s += last_s + max(step_s, 0.0)
            if last_raw is not None:
                offset_raw += last_raw + max(step_raw or 1, 1)
            if got == 0 or self._stop.is_set():  # an empty pass would spin: end instead
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self.inner.close()
                self.inner = self._open()
                self.passes += 1

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.inner.close()
