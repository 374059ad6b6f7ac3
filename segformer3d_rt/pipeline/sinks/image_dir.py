"""One image file per frame, named after the input image when there is one (annotated photo folders)."""
from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ...errors import SinkError
from ...runtime.paths import OutputLock, same_file, writable_dir
from ..frames import Frame
from ..media import error_reason
from .base import Sink, check_rgb

__all__ = ["ImageDirSink", "output_names"]

log = logging.getLogger(__name__)


def output_names(names: Sequence[str], ext: str) -> dict[str, str]:
    """Input file name -> output file name, all distinct: ``<stem>.<ext>``, or ``<name>.<ext>`` (x.jpg.png,
    x.png.png) where several inputs share a stem, then ``-2``, ``-3``... for anything still taken."""
    stems = Counter(Path(n).stem.lower() for n in names)
    taken: set[str] = set()
    plan: dict[str, str] = {}
    for name in names:
        base = Path(name).stem if stems[Path(name).stem.lower()] == 1 else Path(name).name
        candidate, k = f"{base}.{ext}", 1
        while candidate.lower() in taken:  # case-insensitive: the folder may be on such a file system
            k += 1
            candidate = f"{base}-{k}.{ext}"
        taken.add(candidate.lower())
        plan[name] = candidate
    return plan


class ImageDirSink(Sink):
    """One image file per frame: ``<frame.name stem>.<ext>`` for image sources, else ``<index:06d>.<ext>``.

    ``inputs``: the source's image files. Their output names are planned up front (distinct even where two
    inputs share a stem, see :func:`output_names`), and the sink refuses to open when one would be an input."""

    def __init__(self, directory: str | Path, ext: str = "png", inputs: Sequence[str | Path] = ()) -> None:
        self.directory = Path(directory)
        self.ext = ext.lower().lstrip(".")
        self.frames_written = 0
        self._names = output_names([Path(f).name for f in inputs], self.ext)
        for f in inputs:
            target = self.directory / self._names[Path(f).name]
            if same_file(target, f):
                raise SinkError(f"image output '{target}' would overwrite the input '{f}'; "
                                "choose another output folder")
        if not cv2.haveImageWriter(f"probe.{self.ext}"):
            raise SinkError(f"cannot write images to '{self.directory}': unknown image format '.{self.ext}'")
        problem = writable_dir(self.directory)
        if problem is None:
            try:  # permission bits are not the whole story (read-only mounts, root, ACLs): try it
                with tempfile.TemporaryFile(dir=self.directory):
                    pass
            except OSError as e:
                problem = error_reason(e)
        if problem is not None:
            raise SinkError(f"cannot write images to '{self.directory}': {problem}")
        self._lock = OutputLock(self.directory)  # .NAME.lock beside the folder: a second run into it is refused
        try:
            self._lock.acquire()
        except OSError as e:  # e.g. a folder whose parent is read-only: written unlocked, as before locks
            log.debug("cannot lock '%s': %s", self.directory, error_reason(e))

    def path_for(self, frame: Frame) -> Path:
        if frame.name in self._names:
            return self.directory / self._names[frame.name]
        stem = Path(frame.name).stem if frame.name else f"{frame.index:06d}"
        return self.directory / f"{stem}.{self.ext}"

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        check_rgb(rendered)
        path = self.path_for(frame)
        # cv2 stores BGR; imencode + write_bytes also copes with non-ASCII paths, which imwrite does not everywhere
        ok, data = cv2.imencode(f".{self.ext}", cv2.cvtColor(rendered, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SinkError(f"cannot encode frame {frame.index} as .{self.ext}")
        try:
            path.write_bytes(data.tobytes())
        except OSError as e:
            raise SinkError(f"cannot write '{path}': {error_reason(e)}") from e
        self.frames_written += 1

    def close(self) -> None:
        self._lock.release()
