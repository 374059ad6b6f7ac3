"""An OpenCV window, opened only after a child process proved it can be (a missing X server aborts Qt)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

import cv2
import numpy as np

from ...errors import SinkError
from ..frames import Frame
from ..media import error_reason
from .base import Sink, check_rgb

__all__ = ["DisplaySink", "display_available"]

_PROBE_TIMEOUT_S = 15.0
_ESC = 27


def _gui_backend() -> str:
    """The GUI line of OpenCV's build information: 'QT5', 'GTK3', 'WIN32UI', 'COCOA', 'NONE', ..."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match.group(1).upper() if match else "UNKNOWN"


def _window_probe(timeout_s: float = _PROBE_TIMEOUT_S) -> str | None:
    """Open and close a window in a child process; what went wrong, or None.

    OpenCV's Qt/GTK backends abort the whole process when the X server cannot be reached (a stale $DISPLAY after an
    ssh session, a container without the socket), which would kill the run and lose its output, so ask a throwaway
    process first."""
    code = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows(); cv2.waitKey(1)"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout_s:.0f} s"
    except OSError as e:
        return f"cannot start a probe process: {error_reason(e)}"
    if done.returncode == 0:
        return None
    said = [line.strip() for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    return said[0][:160] if said else f"exit code {done.returncode}"


def display_available(*, probe: bool = True) -> tuple[bool, str]:
    """Whether a :class:`DisplaySink` can open a window here, and why not: ``(ok, reason)``.

    ``probe`` (X11/Wayland only) tries a window in a child process, which costs about a second."""
    if not hasattr(cv2, "imshow"):
        return False, "OpenCV has no GUI functions (a headless build)"
    backend = _gui_backend()
    if backend == "NONE":
        return False, "OpenCV was built without GUI support"
    if sys.platform in ("win32", "darwin"):
        return True, f"OpenCV GUI backend {backend}"
    x11, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if not x11 and not wayland:
        return False, "no display ($DISPLAY is not set)"
    if not x11 and backend.startswith("QT"):  # OpenCV's Qt wheels ship only the X11 (xcb) platform plugin
        return False, "no X11 display ($DISPLAY is not set; OpenCV's Qt window needs X11 or XWayland)"
    if probe:
        problem = _window_probe()
        if problem is not None:
            where = f"display {x11!r}" if x11 else f"Wayland display {wayland!r}"
            return False, f"cannot open a window on {where}: {problem}"
    return True, f"OpenCV GUI backend {backend}"


class DisplaySink(Sink):
    """Shows frames in an OpenCV window. q or Esc, or closing the window, sets ``stop_requested``.

    GUI toolkits want one thread: create, write to, poll and close it from the same (main) thread."""

    def __init__(self, title: str = "segformer3d-rt", max_size: tuple[int, int] | None = (1280, 720),
                 on_click: Callable[[tuple[int, int] | None], None] | None = None) -> None:
        """``on_click``: called (on the GUI thread) with the rendered frame's pixel under a left click, None for a
        right click."""
        ok, reason = display_available()
        if not ok:
            raise SinkError(f"cannot show a window: {reason}")
        self.title = title
        self.max_size = max_size
        self.stop_requested = False
        self._shown = False
        self._closed = False
        self._on_click = on_click
        self._scale = 1.0  # rendered pixels per window pixel (frames larger than max_size are shown smaller)
        try:
            # frames arrive already fitted to max_size; GUI_NORMAL drops the Qt toolbar and status bar
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as e:
            raise SinkError(f"cannot open a window: {str(e).strip().splitlines()[-1]}") from e
        if on_click is not None:
            cv2.setMouseCallback(title, self._mouse)

    def _mouse(self, event: int, x: int, y: int, flags: int, param: object) -> None:
        if event == cv2.EVENT_LBUTTONDOWN:
            self._on_click((int(x * self._scale), int(y * self._scale)))
        elif event == cv2.EVENT_RBUTTONDOWN:
            self._on_click(None)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        if self.max_size is None:
            return image
        h, w = image.shape[:2]
        scale = min(self.max_size[0] / w, self.max_size[1] / h)
        if scale >= 1.0:
            self._scale = 1.0
            return image
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        self._scale = w / size[0]
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        if self._closed or self.stop_requested:
            return
        check_rgb(rendered)
        cv2.imshow(self.title, cv2.cvtColor(self._fit(rendered), cv2.COLOR_RGB2BGR))
        self._shown = True
        self.poll()

    def poll(self) -> None:
        """Run the window's event loop once; call regularly even without new frames so it stays responsive."""
        if self._closed:
            return
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), _ESC):
            self.stop_requested = True
        elif self._shown and self._window_gone():
            self.stop_requested = True

    def _window_gone(self) -> bool:
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:  # some backends raise once the window is destroyed
            return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # let the toolkit process the destroy event
        except cv2.error:
            pass  # already closed by the user
