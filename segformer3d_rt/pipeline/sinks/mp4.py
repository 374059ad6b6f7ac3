"""Video files (mp4, mov, mkv) that keep the source's timing and audio, written under a temporary name of the
run's own (``<name>.<pid>-<random>.partial``, beside the target) and renamed when complete, so that a failed run
never leaves a broken file under the final name and two runs never write into one file; the target is locked
(``.<name>.lock``) while it is written, so that a second run aiming at it is refused before any work.

The file on disk plays while it is written (fragmented MP4/MOV, Matroska clusters: recording.py), so ``kill -9``,
a power cut or a full disk cost at most about a second; a finished MP4/MOV is remuxed into a plain file with its
index. Everything that could fail is settled before the first frame: the encoder opens on this machine with its
options (encoders.check_encoder) and the audio plan is tried on real packets (audio.plan_audio). The first write
that fails (full disk, I/O error, the file or its folder removed) stops the run; what was written is kept as
``<name>.incomplete<suffix>``, and the line says whether it plays, or that nothing is left.

``-`` is standard output: a fragmented MP4 streamed as it is made (``run clip.mp4 -o - | ffplay -``), nothing
locked, renamed or remuxed (a pipe cannot seek); logs and the summary stay on standard error."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ...errors import SinkError
from ...runtime.clock import IncreasingClock, frame_ticks, rescale
from ...runtime.paths import STDOUT, OutputLock, claim_output, create_temp, still_there, writable_dir
from ..frames import Frame
from ..media import error_reason, exact_rate
from .audio import AudioTrack, plan_audio
from .base import Sink, check_rgb
from .encoders import check_crf, check_encoder, check_preset, encoder_options, parse_bitrate, video_codec
from .recording import DEFRAGMENTED, Syncer, cut_to_last_fragment, defragment, describe_kept, muxer_options

__all__ = ["CONTAINER_FORMATS", "Mp4Sink"]

log = logging.getLogger(__name__)

# container format per output suffix; the partial file's own suffix cannot tell FFmpeg what to write
CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_KEPT_TAG = ".incomplete"  # out.mp4 -> out.incomplete.mp4: what a late failure leaves, never deleted


class _VideoClock(IncreasingClock):
    """Output timestamps: the source's own (time base + pts) when known, else a constant rate from fps.

    ``stamp`` returns (pts, duration) in ``time_base`` units and keeps them strictly increasing, which the encoder
    and muxer require (a stream source may repeat a timestamp): a stamp that would not increase is shifted
    one tick past the last."""

    def __init__(self, fps: float | None, time_base: Fraction | None) -> None:
        self.from_source = time_base is not None
        if time_base is not None:
            super().__init__(time_base, frame_ticks(exact_rate(fps) if fps else None, Fraction(time_base)))
        else:
            super().__init__(1 / exact_rate(fps or 25.0), 1)
        self._warned = False

    def stamp(self, frame: Frame) -> tuple[int, int]:
        pts = self._raw(frame)
        if not self.increases(pts):
            if not self._warned:
                log.warning("frame %d: timestamp does not increase; shifted to keep the video valid", frame.index)
                self._warned = True
            pts = self.last + 1
        return self.commit(pts), self.step

    def _raw(self, frame: Frame) -> int:
        if not self.from_source:
            return frame.index
        if frame.pts_raw is not None:
            tb = frame.time_base if frame.time_base is not None else self.time_base
            return rescale(frame.pts_raw, tb, self.time_base)
        if frame.pts is not None:
            return round(Fraction(frame.pts) / self.time_base)
        return 0 if self.last is None else self.last + self.step


class Mp4Sink(Sink):
    """Encodes frames into a video file (H.264 in .mp4 by default), optionally with the source's audio.

    Frames keep the source's exact timestamps when ``time_base`` is given and frames carry ``pts_raw``, so the output
    has the source's frame rate, timing and duration; otherwise they are spaced at ``fps``. The file is written
    under ``partial_path`` (a name of this run's own beside the target) and renamed by ``close()`` once complete, so
    a failed run never leaves a broken file under the final name; a run stopped early still closes into a playable
    file with every frame written. Bad settings, and a target another run is writing, fail here, at construction:
    ``size`` (the source's, when known) is the size the encoder is tried at. Every audio stream of ``audio_from`` is
    written (copied or transcoded), or left out with a line naming it.
    """

    def __init__(self, path: str | Path, *, fps: float | None, time_base: Fraction | None = None,
                 audio_from: str | Path | None = None, codec: str = "libx264", crf: int | None = 23,
                 preset: str | None = "medium", bitrate: str | None = None, pix_fmt: str = "yuv420p",
                 options: dict[str, str] | None = None, gpu: int | None = None,
                 size: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self._stdout = str(path) == STDOUT  # streamed to standard output
        self.partial_path: Path | None = None  # the file being written: made by _prepare_path
        self.kept_path: Path | None = None  # where a late failure left the frames written
        self.fps = fps
        self.frames_written = 0
        self._format = self._container_format()
        self._muxer_options = muxer_options(self._format)  # plays while written (recording.py)
        self._codec = video_codec(codec)
        self._pix_fmt = self._check_pix_fmt(pix_fmt)
        self._rgb_out = av.video.format.VideoFormat(pix_fmt).is_rgb  # e.g. libx264rgb: no YUV conversion
        self._color_range = 2 if pix_fmt.startswith("yuvj") else 1  # yuvj*: full (JPEG) range, else limited
        self._bit_rate = parse_bitrate(bitrate) if bitrate is not None else None
        check_crf(self._codec.name, crf)
        check_preset(self._codec.name, preset)
        self._gpu = gpu  # NVENC: the run's CUDA device (h264_nvenc's ``gpu`` option)
        self._options = self._codec_options(crf, preset, options)  # sets self.quality
        check_encoder(self._codec.name, self._options, pix_fmt=self._pix_fmt, bit_rate=self._bit_rate, size=size)
        if not fps and time_base is None:
            log.warning("%s: no frame rate known; writing 25 fps", self.path.name)
        self._clock = _VideoClock(fps, time_base)
        self._lock = threading.Lock()  # close() may come from another thread than write()
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._resize_warned = False
        self._end_s = 0.0  # end time of the last frame written
        self._failed = False
        self._closed = False
        self._audio: list[AudioTrack] = []
        self._lock_file: OutputLock | None = None
        self._fd: int | None = None  # our own descriptor on the partial file: is it still there, fsync
        self._syncer: Syncer | None = None
        self._prepare_path()
        try:
            if audio_from is not None:
                # tried as written (fragmented) and as finalised (plain): PCM, say, goes into one, not the other
                muxings = [self._muxer_options, *([{}] if self._format in DEFRAGMENTED else [])]
                self._audio = plan_audio(audio_from, self._format, self.path.name, muxings)
            target = sys.stdout.buffer if self._stdout else str(self.partial_path)
            self._out = av.open(target, "w", format=self._format, options=self._muxer_options)
        except BaseException as e:
            self._discard()
            if isinstance(e, (av.FFmpegError, OSError)):
                raise SinkError(f"cannot write '{self.path}': {error_reason(e)}") from e
            raise
        self._syncer = Syncer(self._fd) if self._fd is not None else None

    @property
    def audio_mode(self) -> str | None:
        """How the (first) audio track goes in: "copy", "transcode", or None (none, or left out)."""
        return self._audio[0].mode if self._audio else None

    @property
    def audio_modes(self) -> list[str]:
        """How each audio track written goes in ("copy" or "transcode"), in the source's order."""
        return [track.mode for track in self._audio]

    # -- construction-time checks ----------------------------------------------------------------------------
    def _check_pix_fmt(self, pix_fmt: str) -> str:
        try:
            av.video.format.VideoFormat(pix_fmt)
        except (ValueError, av.FFmpegError):
            raise SinkError(f"unknown pixel format '{pix_fmt}'") from None
        supported = [f.name for f in self._codec.video_formats or []]
        if supported and pix_fmt not in supported:
            raise SinkError(f"video codec '{self._codec.name}' cannot encode {pix_fmt} "
                            f"(supported: {', '.join(supported)})")
        return pix_fmt

    def _codec_options(self, crf: int | None, preset: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        """crf/preset in the encoder's own terms (x264: as given; NVENC: rc/cq, p1..p7, gpu; others: none);
        ``self.quality`` says what is used, in one line."""
        opts, self.quality = encoder_options(self._codec.name, crf, preset, bitrate=self._bit_rate is not None,
                                             gpu=self._gpu)
        opts.update({str(k): str(v) for k, v in (extra or {}).items()})
        return opts

    def _container_format(self) -> str:
        if self._stdout:
            return "mp4"  # fragmented (recording.py): it plays from a pipe, which cannot seek back to an index
        fmt = CONTAINER_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            known = ", ".join(sorted(CONTAINER_FORMATS))
            raise SinkError(f"cannot write '{self.path}': unknown video file type '{self.path.suffix}' (use {known})")
        return fmt

    def _prepare_path(self) -> None:
        """Before any frame is processed: lock the target (refused when another run writes it) and create the
        partial file, which proves the target can be written (FFmpeg only opens the file with the first packet)."""
        if self._stdout:
            return
        if self.path.is_dir():
            raise SinkError(f"cannot write '{self.path}': it is a directory")
        problem = writable_dir(self.path.parent)
        if problem is not None:
            raise SinkError(f"cannot write '{self.path}': {problem}")
        self._lock_file = claim_output(self.path)
        try:
            self.partial_path, self._fd = create_temp(self.path)
        except OSError as e:
            self._release()
            raise SinkError(f"cannot write '{self.path}': {error_reason(e)}") from e

    # -- writing -----------------------------------------------------------------------------------------------
    def _open_video(self, width: int, height: int) -> None:
        """Add the video stream sized for the first frame, then the audio stream (the header follows with the first
        packet). Odd sizes are padded to even (4:2:0 chroma needs it): padding keeps every source pixel, the extra
        row/column repeats the border. No display matrix: frames arrive upright (sources apply the rotation)."""
        # average rate: fps; without it, the clock's own rate (constant mode) or the muxer's estimate
        rate = exact_rate(self.fps) if self.fps else None if self._clock.from_source else 1 / self._clock.time_base
        stream = self._out.add_stream(self._codec.name, rate=rate, options=self._options)
        stream.width, stream.height = width + width % 2, height + height % 2
        if (stream.width, stream.height) != (width, height):
            log.info("%s: frame size %dx%d is odd; padded to %dx%d (the video format needs even sides, the extra "
                     "row/column repeats the edge)", self.path.name, width, height, stream.width, stream.height)
        stream.pix_fmt = self._pix_fmt
        stream.time_base = self._clock.time_base
        stream.codec_context.time_base = self._clock.time_base
        if self._bit_rate:
            stream.bit_rate = self._bit_rate
        if self._codec.name == "libx265" and self._format in ("mp4", "mov"):
            stream.codec_tag = "hvc1"  # Apple players only accept HEVC tagged hvc1 (FFmpeg's default is hev1)
        if not self._rgb_out:
            # we convert with BT.709 below; say so, or players guess (BT.601 for SD sizes)
            ctx = stream.codec_context
            ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, self._color_range
        self._stream = stream
        self._size = (width, height)
        attached = []
        for track in self._audio:
            # restamped video starts at 0 where the source's video started; move the audio along
            shift = 0.0 if self._clock.from_source else track.video_start_s
            if track.attach(self._out, shift):
                attached.append(track)
            else:
                track.close()
        self._audio = attached

    def _check_on_disk(self) -> None:
        """Writing into a file that was removed (or whose folder was) succeeds and is lost: fail as a write does."""
        if self._fd is not None and not still_there(self.partial_path, self._fd):
            raise OSError(errno.ENOENT, self._gone())

    def _gone(self) -> str:
        folder = self.path.parent
        where = f"its folder '{folder}' is gone" if not folder.is_dir() else "it was removed"
        return f"the file being written, '{self.partial_path}', no longer exists ({where})"

    def _to_video_frame(self, rendered: np.ndarray) -> av.VideoFrame:
        assert self._size is not None and self._stream is not None
        width, height = self._size
        if rendered.shape[1] != width or rendered.shape[0] != height:
            if not self._resize_warned:
                log.warning("%s: frame size changed from %dx%d to %dx%d; resizing to the first size",
                            self.path.name, width, height, rendered.shape[1], rendered.shape[0])
                self._resize_warned = True
            rendered = cv2.resize(rendered, (width, height), interpolation=cv2.INTER_AREA)
        pad_h, pad_w = self._stream.height - height, self._stream.width - width
        if pad_h or pad_w:
            rendered = np.pad(rendered, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rendered), format="rgb24")
        if self._rgb_out:
            return frame
        return frame.reformat(format=self._pix_fmt, dst_colorspace="itu709",
                              dst_color_range=self._color_range)

    def write(self, frame: Frame, rendered: np.ndarray) -> None:
        check_rgb(rendered)
        with self._lock:
            if self._closed:
                raise SinkError(f"cannot write '{self.path}': the file is already closed")
            if self._failed:
                raise SinkError(f"cannot write '{self.path}': an earlier write failed")
            try:
                self._check_on_disk()
                if self._stream is None:
                    self._open_video(rendered.shape[1], rendered.shape[0])
                assert self._stream is not None
                video_frame = self._to_video_frame(rendered)
                pts, duration = self._clock.stamp(frame)
                video_frame.pts = pts
                with contextlib.suppress(AttributeError):  # settable in newer PyAV; sets the last frame's length
                    video_frame.duration = duration
                video_frame.time_base = self._clock.time_base
                self._out.mux(self._stream.encode(video_frame))
                self.frames_written += 1
                self._end_s = self._clock.seconds(pts + duration)
                for track in self._audio:
                    track.pump(self._clock.seconds(pts))
            except (av.FFmpegError, OSError, ValueError) as e:
                self._failed = True
                raise SinkError(f"cannot write '{self.path}' (after {self.frames_written} frames): "
                                f"{error_reason(e)}") from e

    # -- finishing ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._finish()
            finally:
                self._release()

    def _finish(self) -> None:
        if self._stream is None or (self._failed and self.frames_written == 0):
            self._discard()  # nothing was finished: nothing to keep
            if not self._failed:
                log.warning("no frames were written; '%s' was not created", self.path)
            return
        if self._failed:  # already reported by write(): keep what was written before it
            log.warning("what was written of '%s' before the failure (%d frames sent) is %s", self.path,
                        self.frames_written, self._keep())
            return
        if self._stdout:
            try:
                self._out.mux(self._stream.encode(None))
                for track in self._audio:
                    track.finish(self._end_s)
                self._out.close()
                sys.stdout.buffer.flush()
            except (av.FFmpegError, OSError, ValueError) as e:  # the reader went away: what it read played
                raise SinkError(f"cannot finish the video on standard output: {error_reason(e)}") from e
            finally:
                self._close_audio()
            return
        try:
            self._out.mux(self._stream.encode(None))  # flush the encoder's delayed frames
            for track in self._audio:
                track.finish(self._end_s)  # audio no longer than the video actually written
            self._check_on_disk()
            self._out.close()  # the last fragment and the trailer: the file is complete from here
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SinkError(f"cannot finish '{self.path}': {error_reason(e)}; the {self.frames_written} frames "
                            f"written are {self._keep()}") from e
        finally:
            self._close_audio()
        self._finalise()
        log.debug("wrote %d frames to %s", self.frames_written, self.path)

    def _finalise(self) -> None:
        """The complete file into place: MP4/MOV remuxed into a plain file with its index first (recording.py);
        where that fails (the copy needs the file's space once more: a full disk) the fragmented file, whole and
        playable, takes the name instead, said in one line."""
        assert self.partial_path is not None
        done = self.partial_path
        if self._format in DEFRAGMENTED and self._fd is not None and still_there(self.partial_path, self._fd):
            try:
                done = defragment(self.partial_path, self._format, self.path)
            except (av.FFmpegError, OSError, ValueError) as e:
                log.warning("'%s' is kept fragmented (it plays; some players seek in it slowly): writing its index "
                            "failed: %s", self.path, error_reason(e))
        try:
            os.replace(done, self.path)
        except OSError as e:
            if done != self.partial_path:  # the plain copy could not move: keep one file, the fragmented one
                with contextlib.suppress(OSError):
                    done.unlink()
            raise SinkError(f"cannot finish '{self.path}': {error_reason(e)}; the {self.frames_written} frames "
                            f"written are {self._keep()}") from e
        if done != self.partial_path:
            with contextlib.suppress(OSError):
                self.partial_path.unlink()

    def _keep(self) -> str:
        """After a failure: close what FFmpeg still can, cut the file back to its last whole fragment, move it to a
        free name beside the target (never over an existing file). Says where it is and whether it plays ("kept in
        'PATH' (it plays: N frames)"), or that nothing is left ("lost: why"); ``kept_path`` is set only to a file
        that exists."""
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self._out.close()
        self._close_audio()
        if self._stdout:
            return "on standard output, as far as its reader took it"
        assert self.partial_path is not None
        if self._fd is None or not still_there(self.partial_path, self._fd):
            return f"lost: {self._gone()}"
        if self._format in DEFRAGMENTED:
            with contextlib.suppress(OSError):
                cut_to_last_fragment(self.partial_path)
        kept = self.partial_path
        for n in range(1, 1000):
            tag = _KEPT_TAG if n == 1 else f"{_KEPT_TAG}-{n}"
            candidate = self.path.with_name(f"{self.path.stem}{tag}{self.path.suffix}")
            if candidate.exists():
                continue
            try:
                os.link(self.partial_path, candidate)  # fails rather than replace a file made meanwhile
                self.partial_path.unlink()
                kept = candidate
            except FileExistsError:
                continue
            except OSError as e:  # e.g. no hard links on this file system: rename, having checked the name
                try:
                    os.rename(self.partial_path, candidate)
                    kept = candidate
                except OSError:
                    log.debug("cannot move %s: %s", self.partial_path, e)
            break
        if not kept.exists():
            return "lost: it could not be kept"
        self.kept_path = kept
        return f"kept in {describe_kept(kept)}"

    def _close_audio(self) -> None:
        for track in self._audio:
            track.close()

    def _release(self) -> None:
        """Stop syncing, close our descriptor, let go of the target's lock; never raises (idempotent)."""
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._lock_file is not None:
            self._lock_file.release()
            self._lock_file = None

    def _discard(self) -> None:
        """Close everything and remove the partial file; never raises (it runs on error paths)."""
        for closer in (getattr(self, "_out", None), *self._audio):
            if closer is None:
                continue
            try:
                closer.close()
            except (av.FFmpegError, OSError, ValueError) as e:
                log.debug("while discarding %s: %s", self.partial_path, e)
        if self.partial_path is not None:
            try:
                self.partial_path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot remove '%s': %s", self.partial_path, error_reason(e))
        self._release()
