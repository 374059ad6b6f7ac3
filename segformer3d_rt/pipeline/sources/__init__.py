"""Frame sources: video files, cameras, network streams, images and the synthetic world.

Every source turns its input into :class:`~segformer3d_rt.pipeline.frames.Frame` objects (RGB uint8,
index from 0) and reports bad input as a one-line :class:`~segformer3d_rt.errors.SourceError`::

    with open_source("clip.mp4") as source:
        for frame in source.frames():
            ...

``close()`` may be called from any thread: iteration then ends quietly (see :class:`.base.Guard`).
"""
from __future__ import annotations

from .base import Source
from .camera import CameraSource
from .dispatch import open_source
from .images import IMAGE_SUFFIXES, ImageSource
from .stream import URL_SCHEMES, StreamSource
from .synthetic import SyntheticSource
from .video_file import VideoFileSource

__all__ = [
    "IMAGE_SUFFIXES", "URL_SCHEMES", "CameraSource", "ImageSource", "Source", "StreamSource", "SyntheticSource",
    "VideoFileSource", "open_source",
]
