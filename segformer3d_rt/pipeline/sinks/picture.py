"""One picture file (PNG or JPEG) from a single frame, written under a temporary name of the run's own and renamed
when complete; the target is locked from construction to ``close()`` (see runtime/paths.OutputLock)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...errors import SinkError
from ...runtime.media_kinds import PICTURE_SUFFIXES
from ...runtime.paths import claim_output, create_temp, writable_dir
from ..frames import Frame
from ..media import error_reason
from .base import Sink, check_rgb

__all__ = ["PICTURE_SUFFIXES", "PictureSink"]


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
        self._lock = claim_output(self.path)  # refused when another run writes it

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        check_rgb(rendered)
        if self.frames_written:
            raise ValueError(f"'{self.path}' holds one picture; it already has one")
        ok, data = cv2.imencode(self.path.suffix.lower(), cv2.cvtColor(rendered, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SinkError(f"cannot encode the picture for '{self.path}'")
        partial = None
        try:
            partial, fd = create_temp(self.path)
            with open(fd, "wb") as f:
                f.write(data.tobytes())
            partial.replace(self.path)
        except OSError as e:
            if partial is not None:
                partial.unlink(missing_ok=True)
            raise SinkError(f"cannot write '{self.path}': {error_reason(e)}") from e
        self.frames_written = 1

    def close(self) -> None:
        self._lock.release()
