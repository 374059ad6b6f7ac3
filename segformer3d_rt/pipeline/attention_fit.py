"""Where things are: source pixels <-> model input <-> token and key grids, for the attention maps.

The preprocess fits a frame into the model input keeping its aspect ratio, sides rounded to multiples of 32
(``model_input_size``): a scale per axis (they differ slightly after rounding), no padding. :class:`FrameFit`
also describes a frame placed in a padded input (``content``, the box the frame fills), so maps stay right for
any fit. Grid cells are blocks of input pixels: query token ``j`` of a stage of stride ``s`` covers input pixels
``[s*j, s*(j+1))``, key cell ``m`` covers ``[c*m, c*(m+1))`` with ``c = s * sr`` (32 in every MiT stage); the
sr conv has no padding, so cells past the last whole one do not exist and the border cells stand for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import UserError
from ..runtime.lru import LRUCache
from ..runtime.sizes import model_input_size

__all__ = ["FrameFit", "check_query", "fit_for", "parse_query"]


@dataclass(frozen=True)
class FrameFit:
    """A ``frame_hw`` frame scaled into the ``content`` box (top, left, height, width) of a ``input_hw`` input;
    the rest of the input, if any, is padding."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    content: tuple[float, float, float, float] | None = None  # None: the whole input

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.content if self.content is not None else (0.0, 0.0, float(self.input_hw[0]),
                                                              float(self.input_hw[1]))

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """A source position (pixel edges: pixel (x, y) spans [x, x+1)) -> the input position, same convention."""
        top, left, h, w = self.box
        return left + x * w / self.frame_hw[1], top + y * h / self.frame_hw[0]

    def token(self, xy: tuple[int, int], stride: int, grid_hw: tuple[int, int]) -> tuple[int, int]:
        """The (row, column) of the token of a ``grid_hw`` grid of ``stride`` input pixels whose cell holds the
        centre of source pixel ``xy``."""
        u, v = self.to_input(xy[0] + 0.5, xy[1] + 0.5)
        row = min(max(int(math.floor(v / stride)), 0), grid_hw[0] - 1)
        col = min(max(int(math.floor(u / stride)), 0), grid_hw[1] - 1)
        return row, col

    def key_to_frame(self, key_map: np.ndarray, cell: int) -> np.ndarray:
        """A map on the key grid (Hk x Wk, cells of ``cell`` input pixels) -> frame-sized float32, bilinear between
        cell centres: each source pixel takes the value at its own centre's place in the input."""
        key_map = np.ascontiguousarray(key_map, dtype=np.float32)
        map_x, map_y = _remap_tables(self, key_map.shape, cell)
        return cv2.remap(key_map, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# (fit, key grid, cell) -> remap tables: two float32 planes of the frame size. 16: a run has one fit and one key
# grid (every MiT stage has 32-pixel key cells); an image folder of mixed sizes a few more.
_TABLES: LRUCache[tuple, tuple[np.ndarray, np.ndarray]] = LRUCache(16)


def _remap_tables(fit: FrameFit, key_hw: tuple[int, int], cell: int) -> tuple[np.ndarray, np.ndarray]:
    def build() -> tuple[np.ndarray, np.ndarray]:
        h, w = fit.frame_hw
        top, left, ch, cw = fit.box
        # source pixel centre -> input position -> key grid position (cv2.remap: cell m's centre is at m)
        xs = ((left + (np.arange(w) + 0.5) * cw / w) / cell - 0.5).astype(np.float32)
        ys = ((top + (np.arange(h) + 0.5) * ch / h) / cell - 0.5).astype(np.float32)
        return (np.ascontiguousarray(np.broadcast_to(xs[None, :], (h, w))),
                np.ascontiguousarray(np.broadcast_to(ys[:, None], (h, w))))

    return _TABLES.get_or_create((fit, tuple(key_hw), int(cell)), build)


def fit_for(frame_hw: tuple[int, int], box_hw: tuple[int, int]) -> FrameFit:
    """The preprocess's fit of a frame into the model's input box (see ``Preprocessor``)."""
    return FrameFit(tuple(frame_hw), model_input_size(tuple(frame_hw), tuple(box_hw)))


def parse_query(text: str) -> tuple[int, int]:
    """'X,Y' in source pixels -> (x, y)."""
    try:
        x, y = (int(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"--query wants X,Y in source pixels (for example 320,180), not '{text}'") from None
    if x < 0 or y < 0:
        raise UserError(f"--query {text}: pixel positions start at 0")
    return x, y


def check_query(xy: tuple[int, int] | None, frame_hw: tuple[int, int]) -> None:
    """A one-line UserError when the query is outside the frame."""
    if xy is None:
        return
    h, w = frame_hw
    if not (0 <= xy[0] < w and 0 <= xy[1] < h):
        raise UserError(f"--query {xy[0]},{xy[1]} is outside the {w}x{h} frame (x 0-{w - 1}, y 0-{h - 1})")
