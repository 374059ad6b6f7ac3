"""Cameras through OpenCV: newest frame first (low latency), reopened with back-off when reads fail."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from ...errors import SourceError
from ..frames import Frame
from ..media import describe_fps
from .base import STOPPED, Backoff, Guard, Source, make_frame, quiet_opencv, to_rgb

__all__ = ["CameraSource"]

log = logging.getLogger(__name__)


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
        self._guard = Guard(self._release)
        self._cap: cv2.VideoCapture | None = self._open_capture()
        if self._cap is None:
            raise SourceError(f"camera {self.label} could not be opened{_camera_hint(device)}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.width, self.height = w, h  # as the driver says it opened: frames may still come otherwise
        self.description = f"camera {self.label} {w}x{h} {describe_fps(self.fps)}"

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._guard.close()

    def _open_capture(self) -> cv2.VideoCapture | None:
        """An opened capture, or None (OpenCV reports failure by a closed capture or, rarely, an exception)."""
        try:
            with quiet_opencv():
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
        backoff = Backoff()
        warned = False
        try:
            while True:
                image = self._guard.call(self._read)
                if image is STOPPED:
                    return
                if image is not None:
                    now = time.perf_counter()
                    t0 = now if t0 is None else t0
                    last_pts = max(now - t0, last_pts + 1e-6)  # strictly increasing even on a coarse clock
                    last_ok, warned = now, False
                    backoff.reset()
                    yield make_frame(index, to_rgb(image), last_pts)
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
                if reopened is STOPPED:
                    return
                if reopened:
                    self.reconnects += 1
        finally:
            self._guard.release()
