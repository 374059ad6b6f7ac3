"""Which video encoder a run uses (NVENC when it really opens, else libx264) and checks of codec options,
so that a bad choice fails before the first frame rather than in the middle of a file."""
from __future__ import annotations

import re
from fractions import Fraction

import av

from ...errors import SinkError
from ..media import error_reason

__all__ = ["X264_FAMILY", "choose_encoder", "parse_bitrate", "video_codec"]

X264_FAMILY = frozenset({"libx264", "libx265"})  # encoders that take crf/preset


def _h264_encoders() -> list[str]:
    h264 = av.codec.Codec("h264", "r").id
    names: list[str] = []
    for name in sorted(av.codecs_available):
        try:
            codec = av.codec.Codec(name, "w")
        except (ValueError, av.FFmpegError):
            continue
        if codec.id == h264 and codec.name not in names:
            names.append(codec.name)
    return names


def video_codec(name: str) -> av.codec.Codec:
    try:
        codec = av.codec.Codec(name, "w")
    except (ValueError, av.FFmpegError):
        codec = None
    available = f"available H.264 encoders: {', '.join(_h264_encoders())}"
    if codec is None:
        raise SinkError(f"unknown video codec '{name}' ({available})")
    if codec.type != "video":
        raise SinkError(f"'{name}' is an {codec.type} codec, not a video encoder ({available})")
    return codec


def choose_encoder(requested: str, prefer_hardware: bool) -> tuple[str, str]:
    """(encoder name, a line saying which is used and why). ``auto``: h264_nvenc when ``prefer_hardware``
    (a CUDA run) and an NVENC session really opens, libx264 otherwise."""
    if requested != "auto":
        return requested, requested
    if not prefer_hardware:
        return "libx264", "libx264 (software)"
    if "h264_nvenc" not in av.codecs_available:
        return "libx264", "libx264 (software; this FFmpeg build has no h264_nvenc)"
    try:  # the encoder exists in most wheels; opening it needs an NVIDIA driver and a free NVENC session
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 128, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        ctx.close()
    except (av.FFmpegError, OSError, ValueError) as e:
        return "libx264", f"libx264 (software; h264_nvenc unavailable: {error_reason(e)})"
    return "h264_nvenc", "h264_nvenc (NVENC)"


def parse_bitrate(text: str) -> int:
    """'4M', '2500k', '800000' -> bits per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bps|b)?\s*", text)
    if not match:
        raise SinkError(f"bad bitrate '{text}' (use e.g. 4M, 2500k or 800000)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)
