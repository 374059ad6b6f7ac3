"""Video rotation metadata (the container's display matrix, e.g. a phone clip filmed upright): frames are turned
upright before the network sees them, as players show them (images already honour EXIF orientation)."""
from __future__ import annotations

import struct

import av
import cv2
import numpy as np

__all__ = ["Orientation", "orientation_of"]

_DISPLAYMATRIX = "DISPLAYMATRIX"


class Orientation:
    """An exact quarter-turn and/or mirror from FFmpeg's display matrix ``[a b u; c d v; x y w]`` (16.16 fixed
    point), which maps a coded pixel (column p, row q) to the displayed ``(a p + c q, b p + d q)`` plus an offset.

    ``apply`` turns a decoded H x W x 3 image into the displayed one; ``degrees`` is the counter-clockwise turn
    (PyAV's ``VideoFrame.rotation``), ``mirrored`` whether a flip is part of it."""

    def __init__(self, a: int, b: int, c: int, d: int) -> None:
        self.a, self.b, self.c, self.d = a, b, c, d
        self.transpose = a == 0 and d == 0  # displayed x comes from coded y: a quarter turn
        self.mirrored = a * d - b * c < 0
        # FFmpeg's av_display_rotation_get: -atan2(b, a), counter-clockwise, in (-180, 180]
        self.degrees = {(1, 0): 0, (0, -1): 90, (-1, 0): 180, (0, 1): -90}[(a, b)]

    @classmethod
    def from_matrix(cls, matrix: tuple[int, ...]) -> Orientation | None:
        """None for the identity, or for a matrix that is not a quarter-turn/mirror (left as decoded)."""
        def unit(v: int) -> int | None:
            x = v / 65536.0
            for u in (-1, 0, 1):
                if abs(x - u) < 1e-3:
                    return u
            return None
        a, b, c, d = (unit(matrix[i]) for i in (0, 1, 3, 4))
        if None in (a, b, c, d) or abs(a * d - b * c) != 1:
            return None
        if (a, b, c, d) == (1, 0, 0, 1):
            return None
        return cls(a, b, c, d)

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.transpose:
            # displayed (row, col) = (b p, c q) of coded (row q, col p): transpose, then flip what is negative
            out = cv2.transpose(image)
            rows, cols = self.b < 0, self.c < 0
        else:
            out = image
            rows, cols = self.d < 0, self.a < 0
        if rows and cols:
            return cv2.flip(out, -1)
        if rows:
            return cv2.flip(out, 0)
        if cols:
            return cv2.flip(out, 1)
        return np.ascontiguousarray(out)

    def describe(self) -> str:
        turn = {0: "", 90: "turned 90° anticlockwise", -90: "turned 90° clockwise", 180: "turned 180°"}[self.degrees]
        return " and ".join(x for x in (turn, "mirrored" if self.mirrored else "") if x) or "as coded"


def orientation_of(frame: av.VideoFrame) -> Orientation | None:
    """The frame's display matrix (FFmpeg attaches the stream's to every decoded frame), or None."""
    for side in frame.side_data:
        if getattr(side.type, "name", str(side.type)) == _DISPLAYMATRIX:
            raw = bytes(side)
            if len(raw) >= 36:
                return Orientation.from_matrix(struct.unpack("=9i", raw[:36]))
    return None
