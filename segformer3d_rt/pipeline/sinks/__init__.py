"""Output sinks: where rendered frames go (a video file, a window, a directory of images, nowhere).

Every sink takes ``write(frame, rendered)`` calls (``rendered`` is RGB uint8, H x W x 3) and is finalised by
``close()``, which is idempotent; use them as context managers so they close on every path::

    with Mp4Sink("out.mp4", fps=25, time_base=source.time_base, audio_from="clip.mp4") as sink:
        for frame in frames:
            sink.write(frame, render(frame))

Bad output (unwritable path, unknown codec, no display) is reported as a one-line :class:`SinkError`, as early as
possible: at construction, before any frame was processed.
"""
from __future__ import annotations

from .base import Sink
from .display import DisplaySink, display_available
from .encoders import choose_encoder
from .gif import GifSink
from .image_dir import ImageDirSink
from .mp4 import CONTAINER_FORMATS, Mp4Sink
from .null import NullSink
from .picture import PICTURE_SUFFIXES, PictureSink

__all__ = ["CONTAINER_FORMATS", "PICTURE_SUFFIXES", "DisplaySink", "GifSink", "ImageDirSink", "Mp4Sink", "NullSink",
           "PictureSink", "Sink", "choose_encoder", "display_available"]
