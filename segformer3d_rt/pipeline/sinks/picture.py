"""One picture file (PNG or JPEG) from a single frame, written as ``<name>.partial`` and renamed when complete."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...errors import SinkError
from ...runtime.paths import writable_dir
from ..frames import Frame
from ..media import error_reason
from .base import Sink, check_rgb

__all__ = ["PICTURE_SUFFIXES", "PictureSink"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


class PictureSink(Sink):
    """The first frame written becomes the file; a second frame is a caller's error (one picture, one frame)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.frames_written = 0
        if self.path.suffix.lower() not in PICTURE_SUFFIXES:
            raise SinkError(f"cannot write '{self.path}' as a picture: use {', '.join(PICTURE_SUFFIXES)}")
        if self.path.is_dir():
            raise SinkError(f"cannot write '{self.path}': it is a directory")
        problem = writable_dir(self.path.parent)
        if problem is not None:
            raise SinkError(f"cannot write '{self.path}': {problem}")

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        check_rgb(rendered)
        if self.frames_written:
            raise ValueError(f"'{self.path}' holds one picture; it already has one")
        ok, data = cv2.imencode(self.path.suffix.lower(), cv2.cvtColor(rendered, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SinkError(f"cannot encode the picture for '{self.path}'")
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            partial.write_bytes(data.tobytes())
            partial.replace(self.path)
        except OSError as e:
            partial.unlink(missing_ok=True)
            raise SinkError(f"cannot write '{self.path}': {error_reason(e)}") from e
        self.frames_written = 1

    def close(self) -> None:
        pass
