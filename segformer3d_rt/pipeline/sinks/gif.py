"""Animated GIF files through PyAV: a palette made for every frame (FFmpeg's palettegen + paletteuse), so colour
maps keep their gradients; written under a temporary name of the run's own and renamed when complete, the target
locked meanwhile, like the video sink."""
from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ...errors import SinkError
from ...runtime.paths import OutputLock, claim_output, create_temp, writable_dir
from ..frames import Frame
from ..media import error_reason
from .base import Sink, check_rgb

__all__ = ["GifSink"]

_TIME_BASE = Fraction(1, 100)  # GIF frame delays are in hundredths of a second


class GifSink(Sink):
    """Frames at ``fps`` into a looping GIF. Frames of another size than the first are resized to it."""

    def __init__(self, path: str | Path, fps: float | None) -> None:
        self.path = Path(path)
        self.partial_path: Path | None = None
        self._lock: OutputLock | None = None
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.frames_written = 0
        self._size: tuple[int, int] | None = None  # (width, height)
        self._out = None
        self._stream = None
        self._graph = None
        self._closed = False
        if self.path.suffix.lower() != ".gif":
            raise SinkError(f"cannot write '{self.path}' as a GIF: the name must end in .gif")
        if self.path.is_dir():
            raise SinkError(f"cannot write '{self.path}': it is a directory")
        problem = writable_dir(self.path.parent)
        if problem is not None:
            raise SinkError(f"cannot write '{self.path}': {problem}")
        self._lock = claim_output(self.path)  # refused when another run writes it
        try:  # FFmpeg creates the file only with the first packet: prove it can be written now
            self.partial_path, fd = create_temp(self.path)
            os.close(fd)
            self._out = av.open(str(self.partial_path), "w", format="gif")
        except (av.FFmpegError, OSError) as e:
            self._drop()
            raise SinkError(f"cannot write '{self.path}': {error_reason(e)}") from e

    def _drop(self, remove: bool = True) -> None:
        """Remove the partial file (``remove``) and let go of the lock (never raises)."""
        if remove and self.partial_path is not None:
            with contextlib.suppress(OSError):
                self.partial_path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _open(self, width: int, height: int) -> None:
        self._stream = self._out.add_stream("gif", rate=round(self.fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "pal8"
        self._stream.time_base = _TIME_BASE
        g = av.filter.Graph()
        src = g.add_buffer(width=width, height=height, format="rgb24", time_base=_TIME_BASE)
        split, sink = g.add("split"), g.add("buffersink")
        palette = g.add("palettegen", "stats_mode=single")  # one palette per frame ...
        use = g.add("paletteuse", "new=1")  # ... used for that frame only
        src.link_to(split)
        split.link_to(use, 0, 0)
        split.link_to(palette, 1, 0)
        palette.link_to(use, 0, 1)
        use.link_to(sink)
        g.configure()
        self._graph = g
        self._size = (width, height)

    def _drain(self) -> None:
        while True:
            try:
                out = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            out.pts, out.time_base = self._pts(self.frames_written), _TIME_BASE
            for packet in self._stream.encode(out):
                self._out.mux(packet)
            self.frames_written += 1

    def _pts(self, i: int) -> int:
        return round(i * 100 / self.fps)

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        check_rgb(rendered)
        h, w = rendered.shape[:2]
        try:
            if self._size is None:
                self._open(w, h)
            elif (w, h) != self._size:
                rendered = cv2.resize(rendered, self._size, interpolation=cv2.INTER_AREA)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rendered), format="rgb24")
            vf.pts, vf.time_base = self._pts(self.frames_written), _TIME_BASE
            self._graph.push(vf)
            self._drain()
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"cannot write '{self.path}': {error_reason(e)}") from e

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._graph is not None:
                self._graph.push(None)
                self._drain()
                for packet in self._stream.encode():
                    self._out.mux(packet)
            self._out.close()
            if self.frames_written:
                self.partial_path.replace(self.path)
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"cannot finish '{self.path}': {error_reason(e)}") from e
        finally:
            self._drop(remove=not self.frames_written)  # nothing written: no empty file under the name
