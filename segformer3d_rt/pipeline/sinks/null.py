"""A sink that keeps nothing: benchmarks and dry runs measure the pipeline without output costs."""
from __future__ import annotations

import numpy as np

from ..frames import Frame
from .base import Sink

__all__ = ["NullSink"]


class NullSink(Sink):
    """Discards frames (benchmarks, dry runs); counts them."""

    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        self.frames_written += 1

    def close(self) -> None:
        pass
