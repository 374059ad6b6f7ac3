"""The unit of work that flows through the pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One decoded frame and everything later stages attach to it.

    ``image`` is RGB uint8, H x W x 3, at the source resolution.
    ``pts`` is the presentation timestamp in seconds (None when the source has none),
    ``time_base``/``pts_raw`` keep the container's exact timestamp for remuxing.
    ``t_capture`` is ``time.perf_counter()`` when the frame left the source.
    ``stamps`` collects per-stage perf_counter() times: ``{"preprocess": t0, ...}``.
    """

    index: int
    image: np.ndarray
    pts: float | None
    t_capture: float
    pts_raw: int | None = None
    time_base: Fraction | None = None
    name: str | None = None  # file name for image sources
    stamps: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
