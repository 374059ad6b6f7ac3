"""Which video encoder a run uses (NVENC when it really opens, else libx264) and checks of codec options,
so that a bad choice fails before the first frame rather than in the middle of a file."""
from __future__ import annotations

import re
from fractions import Fraction

import av

from ...errors import SinkError
from ..media import error_reason

__all__ = ["NVENC_FAMILY", "X264_FAMILY", "choose_encoder", "encoder_options", "nvenc_preset", "parse_bitrate",
           "video_codec"]

X264_FAMILY = frozenset({"libx264", "libx265"})  # encoders that take crf/preset
NVENC_FAMILY = frozenset({"h264_nvenc", "hevc_nvenc", "av1_nvenc"})  # rc/cq/qp, preset p1..p7, tune, gpu

# x264's preset names (fastest to slowest) -> NVENC's p1 (fastest) .. p7 (best); medium -> p4, NVENC's default
X264_TO_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p2", "faster": "p3", "fast": "p3",
                        "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7", "placebo": "p7"}
# names h264_nvenc takes itself: p1..p7 and its older presets
NVENC_PRESETS = frozenset({f"p{i}" for i in range(1, 8)} | {
    "default", "slow", "medium", "fast", "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp"})


def nvenc_preset(preset: str) -> str:
    """An x264 preset name or NVENC's own -> the NVENC preset (x264's names win: 'fast' means x264's fast)."""
    name = preset.strip().lower()
    if name in X264_TO_NVENC_PRESET:
        return X264_TO_NVENC_PRESET[name]
    if name in NVENC_PRESETS:
        return name
    known = ", ".join(list(X264_TO_NVENC_PRESET) + [f"p{i}" for i in range(1, 8)])
    raise SinkError(f"preset '{preset}' means nothing to NVENC (use one of {known})")


def encoder_options(codec: str, crf: int | None, preset: str | None, *, bitrate: bool = False,
                    gpu: int | None = None) -> tuple[dict[str, str], str]:
    """The codec options that carry ``--crf``/``--preset`` to ``codec``, and a line saying what is used.

    libx264/libx265: ``crf`` (unless a bitrate is set) and ``preset`` as given (x264 checks the name when it
    opens). NVENC (h264/hevc/av1_nvenc), which has no crf: constant quality ``rc=vbr cq=<crf> b=0`` (crf 0, x264's
    lossless: ``rc=constqp qp=0 tune=lossless``), with a bitrate ``rc=vbr`` at that rate; the preset mapped to
    p1..p7 (ultrafast..veryslow, medium -> p4), ``tune=hq``, and ``gpu=<index>`` so that it encodes on the run's
    GPU. Any other encoder takes neither: the line says they are not applied."""
    opts: dict[str, str] = {}
    if codec in X264_FAMILY:
        used = []
        if crf is not None and not bitrate:
            opts["crf"] = str(crf)
            used.append(f"crf {crf}")
        elif bitrate:
            used.append("bitrate" + (f" (crf {crf} ignored)" if crf is not None else ""))
        if preset:
            opts["preset"] = preset
            used.append(f"preset {preset}")
        return opts, f"{codec} quality: " + (", ".join(used) or "encoder defaults")
    if codec in NVENC_FAMILY:
        if preset:
            opts["preset"] = nvenc_preset(preset)
        if bitrate:
            opts["rc"] = "vbr"
        elif crf == 0:
            opts.update(rc="constqp", qp="0", tune="lossless")
        elif crf is not None:
            # constant quality: cq on x264's 0..51 scale; b=0 so that NVENC's default 2 Mb/s does not cap it
            opts.update(rc="vbr", cq=str(crf), b="0")
        opts.setdefault("tune", "hq")
        if gpu is not None:
            opts["gpu"] = str(gpu)
        used = " ".join(f"{k}={v}" for k, v in opts.items() if k != "b")
        given = " ".join(x for x in (f"--crf {crf}" if crf is not None and not bitrate else "",
                                     "--bitrate" if bitrate else "", f"--preset {preset}" if preset else "") if x)
        return opts, f"{codec} quality: {used}" + (f" (from {given})" if given else "")
    given = [x for x in (f"--crf {crf}" if crf is not None and not bitrate else "",
                         f"--preset {preset}" if preset else "") if x]
    note = f"{codec} quality: encoder defaults" + (f" ({', '.join(given)} not applied: x264/NVENC options)"
                                                    if given else "")
    return opts, note


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


def choose_encoder(requested: str, prefer_hardware: bool, gpu: int | None = None) -> tuple[str, str]:
    """(encoder name, a line saying which is used and why). ``auto``: h264_nvenc when ``prefer_hardware``
    (a CUDA run) and an NVENC session really opens on GPU ``gpu`` (the run's device; None: NVENC's choice),
    libx264 otherwise."""
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
        if gpu is not None:
            ctx.options = {"gpu": str(gpu)}
        ctx.open()
        ctx.close()
    except (av.FFmpegError, OSError, ValueError) as e:
        return "libx264", f"libx264 (software; h264_nvenc unavailable: {error_reason(e)})"
    return "h264_nvenc", "h264_nvenc (NVENC)" if gpu is None else f"h264_nvenc (NVENC, GPU {gpu})"


def parse_bitrate(text: str) -> int:
    """'4M', '2500k', '800000' -> bits per second."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bps|b)?\s*", text)
    if not match:
        raise SinkError(f"bad bitrate '{text}' (use e.g. 4M, 2500k or 800000)")
    scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)
