"""One image file per frame, named after the input image when there is one (annotated photo folders)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from ...errors import SinkError
from ...runtime.paths import writable_dir
from ..frames import Frame
from ..media import error_reason
from .base import Sink, check_rgb

__all__ = ["ImageDirSink"]


class ImageDirSink(Sink):
    """One image file per frame: ``<frame.name stem>.<ext>`` for image sources, else ``<index:06d>.<ext>``."""

    def __init__(self, directory: str | Path, ext: str = "png") -> None:
        self.directory = Path(directory)
        self.ext = ext.lower().lstrip(".")
        self.frames_written = 0
        if not cv2.haveImageWriter(f"probe.{self.ext}"):
            raise SinkError(f"cannot write images to '{self.directory}': unknown image format '.{self.ext}'")
        problem = writable_dir(self.directory)
        if problem is None:
            try:  # permission bits are not the whole story (read-only mounts, root, ACLs): try it
                with tempfile.TemporaryFile(dir=self.directory):
                    pass
            except OSError as e:
                problem = error_reason(e)
        if problem is not None:
            raise SinkError(f"cannot write images to '{self.directory}': {problem}")

    def path_for(self, frame: Frame) -> Path:
        stem = Path(frame.name).stem if frame.name else f"{frame.index:06d}"
        return self.directory / f"{stem}.{self.ext}"

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        check_rgb(rendered)
        path = self.path_for(frame)
        # cv2 stores BGR; imencode + write_bytes also copes with non-ASCII paths, which imwrite does not everywhere
        ok, data = cv2.imencode(f".{self.ext}", cv2.cvtColor(rendered, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SinkError(f"cannot encode frame {frame.index} as .{self.ext}")
        try:
            path.write_bytes(data.tobytes())
        except OSError as e:
            raise SinkError(f"cannot write '{path}': {error_reason(e)}") from e
        self.frames_written += 1

    def close(self) -> None:
        pass
