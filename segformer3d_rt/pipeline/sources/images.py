"""Still images, one file or a directory in natural name order: unreadable files are skipped with a warning."""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...errors import SourceError
from ..frames import Frame
from .base import Source, make_frame, quiet_opencv, to_rgb

__all__ = ["IMAGE_SUFFIXES", "ImageSource"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pbm",
                            ".pgm", ".ppm", ".pnm"})


def _natural_key(name: str) -> list[tuple[int, Any, str]]:
    """Sort key where 'img2' comes before 'img10'."""
    return [(0, int(part), part) if part.isdigit() else (1, part.lower(), part) for part in re.split(r"(\d+)", name)]


def _read_image(path: Path) -> np.ndarray | None:
    """RGB uint8 H x W x 3, or None when the file cannot be read or decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # + imdecode: also works for non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    with quiet_opencv():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # 8-bit 3-channel, EXIF orientation applied
    return None if image is None else to_rgb(image)


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class ImageSource(Source):
    """One image file, or the images of a directory in natural name order (not recursive).

    Files that are not images are skipped with one warning; images that cannot be decoded are skipped with
    a warning each. ``Frame.name`` is the file name; there are no timestamps.
    """

    def __init__(self, path: str | Path, *, live: bool = False) -> None:
        p = Path(path)
        self.path = None  # not a video: nothing for the mp4 sink to take audio from
        self.live = live
        self.reconnects = 0
        self._stop = threading.Event()
        self._first: np.ndarray | None = None  # a single image is decoded at open, to fail early
        if p.is_dir():
            files = sorted((f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")),
                           key=lambda f: _natural_key(f.name))
            self._files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
            others = [f.name for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
            if not self._files:
                detail = f" (only other files: {_listing(others)})" if others else ": it is empty"
                raise SourceError(f"no images in directory '{path}'{detail}")
            if others:
                log.warning("skipping %d non-image file%s in %s: %s", len(others), "s" * (len(others) > 1), path,
                            _listing(others, 20))
            self.description = f"images {p.name or path}/ {len(self._files)} files"
        elif p.is_file():
            self._first = _read_image(p)
            if self._first is None:
                raise SourceError(f"cannot read image '{path}': not a valid image file")
            self._files = [p]
            h, w = self._first.shape[:2]
            self.width, self.height = w, h  # one image: its size is the run's (a folder's may differ)
            self.description = f"image {p.name} {w}x{h}"
        else:
            raise SourceError(f"cannot open image '{path}': file not found")
        self.frame_count = len(self._files)

    @property
    def files(self) -> list[Path]:
        """The image files, in the order their frames come (image sinks plan their output names from them)."""
        return list(self._files)

    def close(self) -> None:
        self._stop.set()
        self._first = None

    def frames(self) -> Iterator[Frame]:
        index = 0
        for file in self._files:
            if self._stop.is_set():
                return
            image = self._first if self._first is not None else _read_image(file)
            if image is None:
                log.warning("skipping unreadable image %s", file.name)
                continue
            yield make_frame(index, image, None, name=file.name)
            index += 1
        if index == 0:
            raise SourceError(f"none of the {len(self._files)} images in '{self._files[0].parent}' could be read")
