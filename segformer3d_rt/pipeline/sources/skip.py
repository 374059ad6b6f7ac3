"""The first frames of a source left out (``run --start-frame N``, ``attention --frame N``): decoded, not run."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..frames import Frame
from .base import Source


class Skipped(Source):
    """``source`` without its first ``n`` frames; ``seen`` counts every frame read (skipped ones too)."""

    def __init__(self, source: Source, n: int) -> None:
        self.inner, self.n, self.seen = source, n, 0
        for name in ("live", "fps", "description", "path", "time_base", "reopenable", "width", "height",
                     "decoder", "has_audio"):
            setattr(self, name, getattr(source, name))
        self.frame_count = max(0, source.frame_count - n) if source.frame_count else source.frame_count
        self.files = tuple(source.files[n:])

    @property
    def reconnects(self) -> int:  # type: ignore[override]
        return self.inner.reconnects

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "on_damage":  # the run's statistics are told by the source that decodes
            self.inner.on_damage = value

    def frames(self) -> Iterator[Frame]:
        for frame in self.inner.frames():
            self.seen += 1
            if self.seen > self.n:
                yield frame

    def close(self) -> None:
        self.inner.close()
