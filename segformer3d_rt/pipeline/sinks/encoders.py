"""Which video encoder a run uses (NVENC when it really opens, else libx264) and checks of codec options,
so that a bad choice fails before the first frame rather than in the middle of a file."""
from __future__ import annotations

import os
import re
from fractions import Fraction

import av

from ...errors import SinkError
from ..media import FFmpegLog, ffmpeg_errors

__all__ = ["FILE_PRESET", "NVENC_FAMILY", "choose_preset", "X264_FAMILY", "X264_PRESETS", "check_crf", "check_encoder", "check_preset",
           "choose_encoder", "encoder_options", "nvenc_preset", "nvenc_unavailable", "parse_bitrate", "video_codec"]

X264_FAMILY = frozenset({"libx264", "libx265"})  # encoders that take crf/preset
NVENC_FAMILY = frozenset({"h264_nvenc", "hevc_nvenc", "av1_nvenc"})  # rc/cq/qp, preset p1..p7, tune, gpu

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")  # x264's and x265's, fastest to slowest
CRF_RANGE = (0, 51)  # x264/x265 (8-bit) crf and NVENC's cq: 0 lossless .. 51 smallest
# which flag an encoder option comes from, to name it in an error
_OPTION_FLAGS = {"crf": "--crf", "cq": "--crf", "qp": "--crf", "rc": "--crf/--bitrate", "preset": "--preset",
                 "gpu": "--device", "tune": "--crf"}
_TRIAL_SIZE = (256, 144)  # NVENC refuses tiny frames; every encoder takes this

# x264's preset names (fastest to slowest) -> NVENC's p1 (fastest) .. p7 (best); medium -> p4, NVENC's default
X264_TO_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p2", "faster": "p3", "fast": "p3",
                        "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7", "placebo": "p7"}
# names h264_nvenc takes itself: p1..p7 and its older presets
NVENC_PRESETS = frozenset({f"p{i}" for i in range(1, 8)} | {
    "default", "slow", "medium", "fast", "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp"})


# The preset when none is given. A lossless file run favours size (x264's own default, medium); a run that must keep
# up with its source (a live source, or --realtime) favours speed: at 720p medium costs about 2.7x veryfast's CPU and
# 4.5x superfast's; at the same crf superfast's file is about a third larger on the annotated dashcam clip
# (BENCHMARKS.md). On a small CPU (<= 4 cores) the network already takes most of it, so the encoder gets the
# cheapest preset that still compresses well.
FILE_PRESET = "medium"
REALTIME_PRESETS = {"small": "superfast", "large": "veryfast"}
SMALL_CPU = 4


def choose_preset(preset: str | None, realtime: bool, cores: int | None = None) -> tuple[str, str]:
    """(preset, why): the one given, else medium for a file run, else a fast one for real time (by core count)."""
    if preset is not None:
        return preset, "as given"
    if not realtime:
        return FILE_PRESET, "file run"
    cores = cores or os.cpu_count() or 1
    size = "small" if cores <= SMALL_CPU else "large"
    return REALTIME_PRESETS[size], f"real time on {cores} CPU cores"


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
    with ffmpeg_errors() as logs:
        why = _nvenc_opens(gpu, logs)
    if why is not None:
        return "libx264", f"libx264 (software; {nvenc_unavailable(why, _gpu_name(gpu))})"
    return "h264_nvenc", "h264_nvenc (NVENC)" if gpu is None else f"h264_nvenc (NVENC, GPU {gpu})"


# what FFmpeg's nvenc says when the GPU has no encoder block (H100/H200/A100 and other compute-only parts)
_NO_NVENC = ("unsupported device", "no capable devices", "no nvenc capable")


def nvenc_unavailable(why: str, gpu_name: str | None) -> str:
    """Why NVENC did not open, in words a user can act on, on one line: a GPU without an encoder is named as
    such (FFmpeg's own line for it, "OpenEncodeSessionEx failed: unsupported device (2)", reads like a bug)."""
    why = " ".join(why.split())
    if any(s in why.lower() for s in _NO_NVENC):
        gpu = gpu_name or "this GPU"
        return f"{gpu} has no NVENC encoder (datacenter GPUs such as H100, H200 and A100 have none): {why}"
    return f"h264_nvenc unavailable: {why}"


def _gpu_name(gpu: int | None) -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0 if gpu is None else gpu) if torch.cuda.is_available() else None
    except (RuntimeError, AssertionError):
        return None


def _nvenc_opens(gpu: int | None, logs: FFmpegLog) -> str | None:
    """None when an NVENC session opens, else FFmpeg's reason (e.g. "Cannot load libcuda.so.1")."""
    try:  # the encoder exists in most wheels; opening it needs an NVIDIA driver and a free NVENC session
        ctx = av.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 128, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        if gpu is not None:
            ctx.options = {"gpu": str(gpu)}
        ctx.open()
        del ctx  # PyAV 18 contexts have no close(): freeing it ends the NVENC session
    except (av.FFmpegError, OSError, ValueError) as e:
        return logs.why(e)
    return None


def parse_bitrate(text: str | int) -> int:
    """'4M', '2500k', '800000' (or a whole number, from a .toml preset) -> bits per second, above 0."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bps|b)?\s*", text) if isinstance(text, str) else None
        if not match:
            raise SinkError(f"bad bitrate {text!r} (use e.g. 4M, 2500k or 800000)")
        scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[match.group(2).lower()]
        value = int(float(match.group(1)) * scale)
    if value <= 0:
        raise SinkError(f"bad bitrate {text!r}: it must be above 0 (use e.g. 4M, 2500k or 800000)")
    return value


def check_crf(codec: str, crf: object) -> None:
    """``crf`` must be a whole number (a preset .toml can give a string) and, for the encoders that take it
    (x264/x265 crf, NVENC cq), within 0..51."""
    if crf is None:
        return
    if isinstance(crf, bool) or not isinstance(crf, int):
        kind = "a string" if isinstance(crf, str) else f"a {type(crf).__name__}"
        raise SinkError(f"crf must be a whole number from {CRF_RANGE[0]} to {CRF_RANGE[1]}, not {crf!r} ({kind}; "
                        "in a .toml preset write crf = 23, without quotes)")
    if (codec in X264_FAMILY or codec in NVENC_FAMILY) and not CRF_RANGE[0] <= crf <= CRF_RANGE[1]:
        raise SinkError(f"crf {crf} is out of range for {codec} (use {CRF_RANGE[0]} = lossless .. "
                        f"{CRF_RANGE[1]} = smallest; 23 is the default)")


def check_preset(codec: str, preset: object) -> None:
    """x264/x265 take only their own preset names (x264 itself would print its complaint to stderr)."""
    if preset is None:
        return
    if not isinstance(preset, str):
        raise SinkError(f"preset must be a name such as 'medium', not {preset!r}")
    if codec in X264_FAMILY and preset not in X264_PRESETS:
        raise SinkError(f"{codec} has no preset '{preset}' (use one of {', '.join(X264_PRESETS)})")
    if codec in NVENC_FAMILY:
        nvenc_preset(preset)


def _hint(codec: str) -> str:
    if codec in NVENC_FAMILY:
        return ("NVENC needs an NVIDIA GPU, its driver and a free encode session; use --codec libx264, "
                "or --codec auto to use NVENC only where it opens")
    return "use --codec libx264"


def _try_open(codec: str, options: dict[str, str], *, pix_fmt: str, bit_rate: int | None,
              size: tuple[int, int]) -> tuple[str | None, list[str]]:
    """Open a real encoder context: (None or why it failed, the options it did not use)."""
    with ffmpeg_errors() as logs:
        try:
            ctx = av.CodecContext.create(codec, "w")
            ctx.width, ctx.height = size[0] + size[0] % 2, size[1] + size[1] % 2
            ctx.pix_fmt = pix_fmt
            ctx.time_base = Fraction(1, 25)
            ctx.framerate = Fraction(25, 1)
            if bit_rate:
                ctx.bit_rate = bit_rate
            ctx.options = dict(options)
            ctx.open()
        except (av.FFmpegError, OSError, ValueError) as e:
            return logs.why(e), []
        unused = sorted(ctx.options)
        del ctx  # PyAV 18 contexts have no close(): freeing it releases the encoder (an NVENC session)
    return None, unused


def check_encoder(codec: str, options: dict[str, str], *, pix_fmt: str = "yuv420p", bit_rate: int | None = None,
                  size: tuple[int, int] | None = None) -> None:
    """Open ``codec`` with ``options`` on this machine now, before any frame is processed; a failure is a
    SinkError that names the cause: the encoder itself (e.g. NVENC without a GPU), or which option it refuses
    or does not know."""
    size = size if size and size[0] > 0 and size[1] > 0 else _TRIAL_SIZE
    why, unused = _try_open(codec, options, pix_fmt=pix_fmt, bit_rate=bit_rate, size=size)
    if why is None:
        if unused:
            raise SinkError(f"video codec '{codec}' has no option(s) {', '.join(unused)}")
        return
    base, _ = _try_open(codec, {}, pix_fmt=pix_fmt, bit_rate=None, size=size)
    if base is not None:
        raise SinkError(f"video codec '{codec}' does not open on this machine: {base} ({_hint(codec)})")
    for key, value in options.items():
        one, _ = _try_open(codec, {key: value}, pix_fmt=pix_fmt, bit_rate=None, size=size)
        if one is not None:
            flag = _OPTION_FLAGS.get(key)
            raise SinkError(f"video codec '{codec}' refuses option {key}={value}"
                            + (f" (from {flag})" if flag else "") + f": {one}")
    if bit_rate:
        one, _ = _try_open(codec, {}, pix_fmt=pix_fmt, bit_rate=bit_rate, size=size)
        if one is not None:
            raise SinkError(f"video codec '{codec}' refuses bit rate {bit_rate} b/s (from --bitrate): {one}")
    settings = " ".join(f"{k}={v}" for k, v in options.items())
    raise SinkError(f"video codec '{codec}' refuses these settings together ({settings}): {why}")
