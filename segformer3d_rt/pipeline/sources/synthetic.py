"""The procedural world as a video source (``synthetic:seed=3,size=256x512,...``): exact, repeatable input
without a file, paced like a camera when opened live."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ...errors import SourceError
from ...runtime.sizes import MAX_SIDE
from ..frames import Frame
from ..media import describe_fps, exact_rate
from .base import Pacer, Source, make_frame

__all__ = ["SyntheticSource"]


def _parse_hw(item: str, value: str) -> tuple[int, int]:
    """'256x512' -> (256, 512): height first, each at least 8 pixels."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 8 or w < 8:
        raise SourceError(f"synthetic source: bad option '{item}' (size is HxW, height first, each at least 8, "
                          "e.g. size=256x512)")
    if h > MAX_SIDE or w > MAX_SIDE:  # found now, not when memory runs out
        raise SourceError(f"synthetic source: size {h}x{w} is too large (at most {MAX_SIDE} per side)")
    return h, w


def _parse_synthetic(spec: str) -> dict[str, Any]:
    """'synthetic:seed=3,size=256x512,fps=25,frames=250' -> keyword arguments (SourceError when malformed).

    ``size`` is HxW, height first, as everywhere else (--input-size, --crop, the synthetic dataset)."""
    opts: dict[str, Any] = {"seed": 0, "height": 256, "width": 512, "fps": 25.0, "frames": None}
    body = spec.split(":", 1)[1] if ":" in spec else ""
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            if not sep:
                raise ValueError
            if key == "seed":
                opts["seed"] = int(value)
            elif key == "size":
                opts["height"], opts["width"] = _parse_hw(item, value)
            elif key == "fps":
                opts["fps"] = float(value)
                if not 0 < opts["fps"] < 1000:
                    raise ValueError
            elif key == "frames":
                opts["frames"] = int(value)
                if opts["frames"] < 1:
                    raise ValueError
            else:
                raise SourceError(f"synthetic source: unknown option '{key}' (use seed, size=HxW, fps, frames)")
        except ValueError:
            raise SourceError(f"synthetic source: bad option '{item}' (e.g. seed=3,size=256x512,fps=25,frames=250)"
                              ) from None
    return opts


class SyntheticSource(Source):
    """Frames rendered by :class:`segformer3d_rt.synthetic.SyntheticWorld` (deterministic per seed)."""

    def __init__(self, *, seed: int = 0, height: int = 256, width: int = 512, fps: float = 25.0,
                 frames: int | None = None, live: bool = False) -> None:
        try:  # lazily: the renderer is only needed for this source
            from ...synthetic import SyntheticWorld
        except ImportError as e:
            raise SourceError(f"synthetic source unavailable: {e}") from e
        self.live = live
        self.reconnects = 0
        self.fps = float(fps)
        self.frame_count = frames
        # exact rational frame period, so pts_raw is the frame index (29.97 -> 100/2997)
        self.time_base = 1 / exact_rate(self.fps)
        self._world = SyntheticWorld(seed=seed, height=height, width=width, fps=self.fps)
        self._stop = threading.Event()
        length = f"{frames} frames" if frames else "unlimited"
        self.width, self.height = width, height
        self.description = f"synthetic seed={seed} {width}x{height} {describe_fps(self.fps)} {length}"

    @classmethod
    def from_spec(cls, spec: str, *, live: bool = False) -> SyntheticSource:
        return cls(**_parse_synthetic(spec), live=live)

    def close(self) -> None:
        self._stop.set()

    def frames(self) -> Iterator[Frame]:
        pacer = Pacer(self._stop) if self.live else None
        index = 0
        while (self.frame_count is None or index < self.frame_count) and not self._stop.is_set():
            image = self._world.render(index).image
            pts = float(index * self.time_base)
            if pacer is not None and not pacer.wait(pts):
                return
            yield make_frame(index, image, pts, pts_raw=index, time_base=self.time_base)
            index += 1
