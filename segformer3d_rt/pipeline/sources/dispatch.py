"""``open_source``: which kind of source a spec names (synthetic, URL, camera, images, else a video file)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .base import Source
from .camera import CameraSource
from .images import IMAGE_SUFFIXES, ImageSource
from .stream import URL_SCHEMES, StreamSource
from .synthetic import SyntheticSource
from .video_file import VideoFileSource, is_fifo

__all__ = ["SOURCE_KINDS", "open_source", "source_kind"]

_CAMERA_RE = re.compile(r"/dev/video\d+")


# what a spec names, as `serve` restricts the streams added over its API (a "file" is any local path: a video,
# an image or folder of images, a FIFO)
SOURCE_KINDS = ("camera", "url", "synthetic", "file")


def source_kind(spec: str) -> str:
    """Which of :data:`SOURCE_KINDS` ``spec`` names, by the same rules as :func:`open_source`."""
    spec = str(spec)
    if spec.lower() == "synthetic" or spec.lower().startswith("synthetic:"):
        return "synthetic"
    if _scheme(spec) in URL_SCHEMES:
        return "url"
    if spec.isdigit() or _CAMERA_RE.fullmatch(spec):
        return "camera"
    return "file"


def _scheme(spec: str) -> str:
    try:
        return urlsplit(spec).scheme.lower()
    except ValueError:  # e.g. a malformed IPv6 host: not a URL we can use
        return ""


def open_source(spec: str, *, live: bool | None = None, timeout_s: float = 10.0, reconnect: bool = True,
                hwaccel: bool = False, decode_threads: int = 0, hw_device: int | None = None) -> Source:
    """Open a frame source.

    ``spec``: a video file path; a camera index ("0") or device path (/dev/video0); an rtsp://, rtmp://,
    http(s):// URL; an image file or a directory of images; "synthetic:" or
    "synthetic:seed=3,size=256x512,fps=25,frames=250" (size is HxW, height first); a FIFO (named pipe) carrying a
    stream FFmpeg can read without seeking (mkv, ts, fragmented mp4), opened exactly once.
    ``live``: None picks the kind's default (cameras and URLs live, the rest lossless); a file or the
    synthetic world opened live is paced at its frame rate like a camera.
    ``timeout_s``: open/read timeout of cameras and streams, and how long they may try to reconnect.
    ``hwaccel``: video files try NVIDIA decoding first (a log line says which decoder runs).
    ``decode_threads``: video files' decoder threads (0: FFmpeg's choice, 1: none beside the caller's).
    ``hw_device``: the CUDA device index NVIDIA decoding uses (None: FFmpeg's default, GPU 0).
    Raises SourceError (one line) when the input cannot be opened.
    """
    spec = str(spec)
    kw: dict[str, Any] = {} if live is None else {"live": live}
    if spec.lower() == "synthetic" or spec.lower().startswith("synthetic:"):
        return SyntheticSource.from_spec(spec, **kw)
    if _scheme(spec) in URL_SCHEMES:
        return StreamSource(spec, timeout_s=timeout_s, reconnect=reconnect, **kw)
    if spec.isdigit():  # a camera index wins over a file that happens to be called "0"
        return CameraSource(int(spec), timeout_s=timeout_s, reconnect=reconnect, **kw)
    if _CAMERA_RE.fullmatch(spec):
        return CameraSource(spec, timeout_s=timeout_s, reconnect=reconnect, **kw)
    path = Path(spec).expanduser()
    if is_fifo(path):  # told by stat alone: the one reader that opens it is FFmpeg's, once
        return VideoFileSource(path, hwaccel=hwaccel, decode_threads=decode_threads, hw_device=hw_device, **kw)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, **kw)
    return VideoFileSource(path, hwaccel=hwaccel, decode_threads=decode_threads, hw_device=hw_device, **kw)
