"""Video files through PyAV: every frame in order with its container timestamps, upright (rotation metadata
applied), damaged packets skipped and reported, and a clear SourceError when a file cannot be opened or turns out
truncated. A FIFO is opened exactly once (a second open would wait for a writer that is gone)."""
from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import av

from ...errors import SourceError
from ..frames import Frame
from ..media import describe_fps, error_reason, stream_fps
from .base import END, STOPPED, DamageLog, Guard, Pacer, Source, close_decoding, decoded_frames, make_frame
from .orientation import Orientation, orientation_of

__all__ = ["HW_PIX_FMTS", "NVDEC", "VideoFileSource", "decode_threading", "decoder_claim", "hwaccel_device",
           "is_fifo"]

log = logging.getLogger(__name__)

_COUNT_BUDGET_S = 2.0  # time allowed to count a file's frames by demuxing when its header has no count


NVDEC = "CUDA (NVDEC)"
# pixel formats of frames that live in a hardware device's memory (FFmpeg's hwaccel formats)
HW_PIX_FMTS = frozenset({"cuda", "vaapi", "vdpau", "qsv", "d3d11", "d3d11va_vld", "dxva2_vld", "d3d12",
                         "videotoolbox_vld", "drm_prime", "opencl", "mediacodec", "vulkan"})


def is_fifo(path: str | Path) -> bool:
    """A named pipe (or another file that can be read only once, such as /dev/stdin on a pipe): checked with stat,
    which reads nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def hwaccel_device(index: int | None) -> str | None:
    """The ``device`` argument of PyAV's ``HWAccel("cuda", device=...)`` for a CUDA device index: FFmpeg's CUDA
    hwdevice takes the index as a string ("1"); None leaves FFmpeg's default (GPU 0)."""
    if index is None:
        return None
    if index < 0:
        raise ValueError(f"CUDA device index must be >= 0, got {index}")
    return str(index)


def decoder_claim(codec_name: str, *, hw_attached: bool, context_format: str | None = None,
                  frame_format: str | None = None, decoded: bool = True, reason: str | None = None) -> str:
    """Which decoder really runs, in words.

    PyAV attaching a CUDA device (``codec_context.is_hwaccel``) only means NVDEC was *offered*: with
    ``allow_software_fallback`` FFmpeg's get_format picks a software format when the hardware cannot take the
    stream (profile, size, no free session), and decoding goes on in software. What tells is the format the
    decoder chose, known once a frame has decoded: the codec context's pixel format (``context_format``) is the
    hardware one ('cuda') only when frames come from the hardware (PyAV then downloads them, so the frame it
    hands out is nv12; ``frame_format`` is 'cuda' only for frames left on the device). ``decoded``: False before
    the first frame (nothing is claimed yet); ``reason``: why hardware was not attached at all."""
    if not hw_attached:
        return f"{codec_name} (software" + (f"; {reason})" if reason else ")")
    if not decoded:
        return f"{codec_name} (NVDEC requested, unconfirmed until the first frame decodes)"
    if context_format in HW_PIX_FMTS or frame_format in HW_PIX_FMTS:
        return NVDEC
    chose = context_format or frame_format or "unknown"
    return f"{codec_name} (software; FFmpeg fell back from NVDEC: the decoder chose {chose}, not cuda)"


def decode_threading(hwaccel: bool, requested: int) -> tuple[int, str | None]:
    """(thread_count, thread_type or None to leave FFmpeg's) for a decoder. NVDEC: one thread, no frame threads:
    each frame thread holds its own decode surfaces, and with FFmpeg's automatic count on a many-core machine
    nvdec asks for more than the driver gives ("Try lowering the amount of threads") and falls back to software.
    Software: ``requested`` (0: FFmpeg picks) with frame+slice threads (files only, where their latency does not
    matter): more frames per second, but ~50% more CPU per frame (720p H.264: 8.1 vs 5.3 ms), a loss when the
    cores are all busy, so a request of 1 stays one plain thread."""
    if hwaccel:
        return 1, "SLICE"
    return requested, ("AUTO" if requested != 1 else None)


def _open_hw(path: str, device: int | None = None) -> tuple[av.container.InputContainer | None, str]:
    """Try NVIDIA decoding on CUDA device ``device`` (PyAV's CUDA hwaccel; frames come back to host memory as
    they are read). Returns (container or None, what happened) so the caller can say which decoder is tried;
    whether NVDEC really decodes is only known after the first frame (:func:`decoder_claim`)."""
    try:  # PyAV >= 14; an older or odd build decodes in software, saying why, rather than failing
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:
        return None, f"this PyAV ({av.__version__}) has no hardware decoding (it needs PyAV 14 or newer)"
    if "cuda" not in hwdevices_available():
        return None, "this FFmpeg build has no CUDA hwaccel"
    try:
        container = av.open(path, hwaccel=HWAccel("cuda", device=hwaccel_device(device),
                                                  allow_software_fallback=True))
        stream = container.streams.video[0] if container.streams.video else None
    except (av.FFmpegError, OSError) as e:
        return None, f"CUDA decode unavailable: {error_reason(e)}"
    if stream is None or not stream.codec_context.is_hwaccel:
        container.close()
        return None, "CUDA decode unavailable for this stream"
    return container, "NVDEC" + (f" on GPU {device}" if device is not None else "")


def _open_video(path: str, hwaccel: bool = False, hw_device: int | None = None,
                note: list[str] | None = None) -> av.container.InputContainer:
    """Open ``path`` with PyAV and check it has a decodable video stream (SourceError otherwise).
    ``hwaccel``: try NVIDIA decoding first (on CUDA device ``hw_device``), falling back to FFmpeg's software
    decoder; ``note`` receives why hardware decoding was not attached."""
    what = f"cannot open video '{path}'"
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{what}: file not found")
    if p.is_dir():
        raise SourceError(f"{what}: it is a directory")
    container = None
    if hwaccel:
        container, why = _open_hw(path, hw_device)
        if container is not None:
            log.debug("decode: trying %s (confirmed or not with the first frame)", why)
        else:
            log.info("decode: software (%s)", why)
            if note is not None:
                note.append(why)
    if container is None:
        try:
            container = av.open(path)
        except av.error.InvalidDataError:
            raise SourceError(f"{what}: not a video file, or damaged beyond opening (FFmpeg cannot read it)") from None
        except PermissionError:
            raise SourceError(f"{what}: permission denied") from None
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"{what}: {error_reason(e)}") from None
    try:  # the same checks whichever decoder opened it
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise SourceError(f"{what}: it has no video stream (it contains {', '.join(kinds)})")
        stream = container.streams.video[0]
        # FFmpeg happily "decodes" text files as ANSI art: that is not a video
        if container.format.name == "tty" or stream.codec_context.name == "ansi":
            raise SourceError(f"{what}: not a video file (it looks like text)")
        if not stream.width or not stream.height:
            raise SourceError(f"{what}: its video stream has no picture size (damaged header?)")
    except BaseException:
        container.close()
        raise
    return container


def _count_packets(path: str, stream_index: int, budget_s: float = _COUNT_BUDGET_S) -> int | None:
    """Frames of a video stream counted by demuxing (no decoding); None when it takes too long or fails."""
    deadline = time.perf_counter() + budget_s
    n = 0
    try:
        with av.open(path) as container:
            for packet in container.demux(container.streams[stream_index]):
                n += packet.size > 0  # the final flush packets are empty
                if time.perf_counter() > deadline:
                    return None
    except (av.FFmpegError, OSError):
        return None
    return n


class VideoFileSource(Source):
    """A video file decoded with PyAV (threaded decoding), every frame in order with its exact timestamps.

    Frames come upright: a display matrix (rotation metadata) is applied to the pixels, so the network and the
    output see what a player shows. Packets the decoder refuses are skipped, as FFmpeg does, and reported
    (``damage``, ``on_damage``); a file that stops early is still a SourceError after its last frame."""

    def __init__(self, path: str | Path, *, live: bool = False, hwaccel: bool = False,
                 decode_threads: int = 0, hw_device: int | None = None) -> None:
        self.path = str(path)
        self.live = live
        self._decode_threads = decode_threads
        self.reconnects = 0
        self._name = Path(self.path).name
        self.reopenable = not is_fifo(self.path)
        why: list[str] = []
        if hwaccel and not self.reopenable:
            # trying NVDEC may mean a second open, which a FIFO cannot give
            log.info("decode: software (a FIFO is opened only once, so NVDEC is not tried)")
            why.append("a FIFO is opened only once")
            hwaccel = False
        self._hwaccel = hwaccel
        self._hw_device = hw_device  # the run's CUDA device index (None: FFmpeg's default)
        self._container: av.container.InputContainer | None = _open_video(self.path, hwaccel, hw_device, why)
        ctx = self._container.streams.video[0].codec_context
        # until a frame decodes, only what was attached is known (see decoder_claim)
        self.decoder = decoder_claim(ctx.name, hw_attached=ctx.is_hwaccel, decoded=False,
                                     reason=why[0] if why else None)
        self._frames_it: Iterator[av.VideoFrame] | None = None
        self._guard = Guard(self._release)
        stream = self._container.streams.video[0]
        self.time_base = stream.time_base
        self.fps = stream_fps(stream)
        self.width, self.height = stream.width, stream.height
        self.has_audio = bool(self._container.streams.audio)
        self._coded_size = (stream.width, stream.height)
        self.orientation: Orientation | None = None  # known from the first decoded frame
        self.damage: DamageLog | None = None  # the last pass's skipped packets
        # frames the container's index promises (mp4/mov/avi); used to notice a silently truncated file
        self._header_frames = stream.frames if stream.frames > 0 else None
        self._expected_end_s: float | None = None
        if self._header_frames and stream.duration and self.time_base:
            self._expected_end_s = float(((stream.start_time or 0) + stream.duration) * self.time_base)
        # counting means reading the file once more: never for a FIFO
        counted = _count_packets(self.path, stream.index) if self.reopenable and not self._header_frames else None
        self.frame_count = self._header_frames or counted
        self._describe()

    def _describe(self) -> None:
        count = f"{self.frame_count} frames" if self.frame_count else "unknown length"
        turned = ""
        if self.orientation is not None:
            coded = "coded {}x{}, ".format(*self._coded_size) if self.orientation.transpose else ""
            turned = f" (upright: {coded}{self.orientation.describe()})"
        self.description = f"video {self._name} {self.width}x{self.height}{turned} {describe_fps(self.fps)} {count}"

    def _release(self) -> None:
        close_decoding(self._frames_it, self._container)
        self._frames_it = self._container = None

    def close(self) -> None:
        self._guard.close()

    def _start(self) -> Iterator[av.VideoFrame]:
        if self._container is None:  # a second pass: open the file again
            if not self.reopenable:
                raise SourceError(f"cannot read '{self.path}' again: a FIFO can be read only once")
            self._container = _open_video(self.path, self._hwaccel, self._hw_device)
        stream = self._container.streams.video[0]
        count, kind = decode_threading(stream.codec_context.is_hwaccel, self._decode_threads)
        stream.codec_context.thread_count = count
        if kind is not None:
            stream.thread_type = kind
        self.damage = DamageLog(self._name, self.on_damage)
        self._frames_it = decoded_frames(self._container, stream, self.damage)
        return self._frames_it

    def frames(self) -> Iterator[Frame]:
        it = self._guard.call(self._start)
        if it is STOPPED:
            return
        damage = self.damage
        assert damage is not None
        pacer = Pacer(self._guard.stop) if self.live else None
        index, last_end = 0, None
        try:
            while True:
                try:
                    item = self._guard.call(lambda: next(it, END))
                except (av.FFmpegError, OSError) as e:
                    where = f" after {last_end:.2f} s" if last_end is not None else " at the start"
                    raise SourceError(self._damage(index, f"{error_reason(e)}{where}")) from e
                if item is STOPPED:
                    return
                if item is END:
                    break
                if index == 0 and self._guard.call(lambda: self._first_frame(item)) is STOPPED:
                    return
                frame = self._convert(index, item)
                last_end = (frame.pts or 0.0) + self._span_s(item)
                damage.good(frame.pts, last_end)
                if pacer is not None and frame.pts is not None and not pacer.wait(frame.pts):
                    return
                frame.t_capture = time.perf_counter()
                yield frame
                index += 1
            damage.finish()
            if index == 0 and damage.packets:
                raise SourceError(self._damage(0, f"none of its {damage.packets} packets could be decoded "
                                                  f"({damage.last_error})"))
            problem = self._shortfall(index, last_end)
            if problem:
                raise SourceError(self._damage(index, problem))
        finally:
            self._guard.release()

    def _first_frame(self, av_frame: av.VideoFrame) -> None:
        """What only a decoded frame tells: which decoder really runs, and the display matrix (FFmpeg attaches
        the stream's to every frame), which turns the picture upright."""
        self._confirm_decoder(av_frame)
        self.orientation = orientation_of(av_frame)
        w, h = self._coded_size
        self.width, self.height = (h, w) if self.orientation is not None and self.orientation.transpose else (w, h)
        if self.orientation is not None:
            log.info("video '%s' has rotation metadata: frames are %s to stand upright (%dx%d)", self._name,
                     self.orientation.describe(), self.width, self.height)
            self._describe()

    def _confirm_decoder(self, av_frame: av.VideoFrame) -> None:
        """After the first frame: say which decoder really runs (NVDEC only when the decoder chose CUDA frames)."""
        if self._container is None:
            return
        ctx = self._container.streams.video[0].codec_context
        if not ctx.is_hwaccel:  # software from the start: said when the file opened
            return
        fmt = ctx.format
        frame_fmt = av_frame.format
        self.decoder = decoder_claim(ctx.name, hw_attached=True, context_format=fmt.name if fmt else None,
                                     frame_format=frame_fmt.name if frame_fmt else None)
        log.info("decode: %s", self.decoder)

    def _convert(self, index: int, av_frame: av.VideoFrame) -> Frame:
        image = av_frame.to_ndarray(format="rgb24")
        if self.orientation is not None:
            image = self.orientation.apply(image)
        if av_frame.pts is None:  # e.g. raw elementary streams: derive the time from the frame rate
            return make_frame(index, image, index / self.fps if self.fps else None)
        time_base = av_frame.time_base or self.time_base
        return make_frame(index, image, float(av_frame.pts * time_base), pts_raw=int(av_frame.pts), time_base=time_base)

    def _span_s(self, av_frame: av.VideoFrame) -> float:
        """How long a frame is shown (its duration, else one frame period)."""
        if av_frame.duration and av_frame.time_base:
            return float(av_frame.duration * av_frame.time_base)
        return 1.0 / self.fps if self.fps else 0.0

    def _shortfall(self, decoded: int, last_end: float | None) -> str | None:
        """Why the file ended before its header said it would, or None. FFmpeg stops silently at the end of a
        truncated mp4, so compare with the index: time first (an edit list may legitimately drop a few leading
        frames), the frame count when the header has no duration."""
        if not self._header_frames or decoded >= self._header_frames:
            return None
        if decoded == 0 or last_end is None:
            return "no frame could be decoded (the file is truncated or damaged)"
        if self._expected_end_s is not None:
            slack = 1.5 / self.fps if self.fps else 0.1
            if last_end >= self._expected_end_s - slack:
                return None
            return (f"the file is truncated (frames stop at {last_end:.2f} s, "
                    f"the container says {self._expected_end_s:.2f} s)")
        return f"the file is truncated (the container lists {self._header_frames} frames)"

    def _damage(self, decoded: int, reason: str) -> str:
        of = f" of {self.frame_count}" if self.frame_count else ""
        return f"video '{self._name}' ended early: decoded {decoded}{of} frames, then: {reason}"
