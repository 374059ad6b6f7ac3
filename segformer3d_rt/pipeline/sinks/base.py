"""The :class:`Sink` interface and the frame check every sink makes (output paths: runtime/paths.py)."""
from __future__ import annotations

import abc
import errno
import logging
from types import TracebackType

import numpy as np

from ...errors import SinkError
from ..frames import Frame

__all__ = ["Sink", "check_rgb", "is_write_failure"]

log = logging.getLogger(__name__)

# what the file system answers when an output cannot take more: these stop the run (never just one stream of it)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.ENOENT, errno.ESTALE,
                 errno.EBADF, errno.EPIPE}


def is_write_failure(error: BaseException) -> bool:
    """Whether ``error`` (an OSError or FFmpeg's own) says the output file cannot be written any more (full disk,
    I/O error, vanished folder), as opposed to a muxer refusing one packet."""
    return getattr(error, "errno", None) in _WRITE_ERRNOS


class Sink(abc.ABC):
    """Takes rendered frames. ``stop_requested`` turns True when the user asked to quit (e.g. closed a window)."""

    stop_requested: bool = False

    @abc.abstractmethod
    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        """Consume one rendered frame (RGB uint8, H x W x 3)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finalise the output. Idempotent."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is already on its way out: finalise what we can without hiding it
            self.close()
        except SinkError as e:
            log.warning("%s", e)


def check_rgb(rendered: np.ndarray) -> None:
    if rendered.dtype != np.uint8 or rendered.ndim != 3 or rendered.shape[2] != 3:
        raise ValueError(f"sinks take RGB uint8 H x W x 3 images, got {rendered.dtype} {rendered.shape}")
