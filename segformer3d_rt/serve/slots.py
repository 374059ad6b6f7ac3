"""The two one-frame hand-overs of `serve`: a Mailbox (producer -> batcher, newest wins, drops counted) and a
LatestFrame (render -> any number of viewers, each waiting for a newer frame than the one it has)."""
from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Holds at most one item: ``put`` replaces what is there (counted in ``dropped``), ``take`` empties it.
    Never blocks; the batcher polls every stream's mailbox without waiting on any of them."""

    def __init__(self, on_put: threading.Event | None = None) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._on_put = on_put  # e.g. the batcher's wake-up, shared by every stream's mailbox
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
        if self._on_put is not None:
            self._on_put.set()

    def restore(self, item: T) -> None:
        """Give back an item taken but not used (a batch of another shape): kept only if nothing newer came."""
        with self._cond:
            if self._item is None:
                self._item = item
            else:
                self.dropped += 1

    def take(self, timeout: float = 0.0) -> T | None:
        """The item, emptying the box; waits up to ``timeout`` for one."""
        with self._cond:
            if self._item is None and timeout > 0:
                self._cond.wait_for(lambda: self._item is not None, timeout)
            item, self._item = self._item, None
            return item

    def __len__(self) -> int:
        with self._cond:
            return 0 if self._item is None else 1


class LatestFrame:
    """The newest rendered frame of a stream, numbered. Viewers wait for a number above the one they showed;
    the JPEG of a frame is encoded once, by the first viewer that asks, however many ask."""

    def __init__(self, quality: int = 80) -> None:
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None  # RGB
        self._meta: dict[str, Any] = {}
        self._jpeg: tuple[int, bytes] | None = None
        self.seq = 0
        self.closed = False
        self.quality = quality

    def publish(self, image: np.ndarray, **meta: Any) -> None:
        with self._cond:
            self._image, self._meta = image, meta
            self.seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting viewer for good (the stream was removed or the server stops)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_newer(self, seq: int, timeout: float) -> tuple[int, np.ndarray | None, dict[str, Any]]:
        """(its number, the frame, its meta) once a frame newer than ``seq`` exists, or after ``timeout``
        whatever is there (``seq`` unchanged means nothing new)."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq or self.closed, timeout)
            return self.seq, self._image, dict(self._meta)

    def jpeg(self, seq: int, timeout: float) -> tuple[int, bytes | None]:
        """The JPEG of the first frame newer than ``seq`` (or the current one after ``timeout``)."""
        n, image, _ = self.wait_newer(seq, timeout)
        if image is None:
            return n, None
        with self._cond:
            if self._jpeg is not None and self._jpeg[0] == n:
                return self._jpeg
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        data = buf.tobytes() if ok else None
        with self._cond:
            if data is not None and (self._jpeg is None or self._jpeg[0] < n):
                self._jpeg = (n, data)
        return n, data
