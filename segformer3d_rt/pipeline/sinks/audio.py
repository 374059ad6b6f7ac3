"""The output's audio, settled before the first frame, every track of the source: each copied as is when the
container takes it, else transcoded to AAC, else left out with one warning line naming it.

Each plan is tried first on the file's first packets, muxed into an in-memory container of the output's format
with its trailer written, so that a codec the container refuses (PCM from an .avi into .mp4, Opus from a .webm into
.mov) is found here and not after the last frame, when FFmpeg writes the header or the index."""
from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av

from ...errors import SinkError
from ..media import error_reason, ffmpeg_errors
from .base import is_write_failure

__all__ = ["TRANSCODE_CODEC", "AudioTrack", "plan_audio"]

log = logging.getLogger(__name__)

TRANSCODE_CODEC = "aac"  # mp4, mov and mkv all hold AAC, and every FFmpeg build has its encoder
_TRIAL_PACKETS = 32
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}  # others are downmixed to stereo
_FALLBACK_RATE = 48000
_BITS_PER_CHANNEL = 64_000
_KEPT_METADATA = ("language", "title")  # what tells several tracks apart in a player's menu


def _open_input(path: str) -> av.container.InputContainer:
    try:
        return av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise SinkError(f"cannot read audio from '{path}': {error_reason(e)}") from e


def _label(path: str, index: int, count: int) -> str:
    """How a track is named in messages: "audio of 'x.mp4'", or "audio track 2 of 'x.mp4'" among several."""
    return f"audio of '{path}'" if count <= 1 else f"audio track {index + 1} of '{path}'"


class AudioTrack:
    """Writes one audio stream of a file (``index``: the n-th audio stream, default the first) into an output
    container, packet by packet, interleaved with the video: ``mode`` "copy" (as is) or "transcode" (decoded and
    encoded to AAC). Each track reads the file through its own demuxer, so several tracks interleave independently.

    ``shift_s`` (given to ``attach``) is subtracted from every timestamp (the video restamped from 0). Once
    attached, an error while reading the audio, or a packet the muxer refuses, stops this track with one warning
    and leaves the video alone; a failing output file (full disk, I/O error) is the whole file's failure and is
    raised; ``strict`` (the trial) raises every error."""

    def __init__(self, path: str | Path, mode: str = "copy", *, strict: bool = False, index: int = 0) -> None:
        if mode not in ("copy", "transcode"):
            raise ValueError(f"unknown audio mode {mode!r}")
        self.path = str(path)
        self.mode = mode
        self._strict = strict
        self._input = _open_input(self.path)
        audio = self._input.streams.audio
        self.stream_in = audio[index] if index < len(audio) else None
        self.label = _label(self.path, index, len(audio))
        video = self._input.streams.video
        v0 = video[0] if video else None
        # where the video starts, to line audio up with video restamped from 0
        self.video_start_s = float(v0.start_time * v0.time_base) if v0 and v0.start_time and v0.time_base else 0.0
        self.shift_s = 0.0
        self._out: av.container.OutputContainer | None = None
        self._stream_out: av.stream.Stream | None = None
        self._packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        self.packets_written = 0
        self.packets_lost = 0  # undecodable packets skipped (transcode)

    @property
    def codec_name(self) -> str:
        return self.stream_in.codec_context.name if self.stream_in is not None else "none"

    def attach(self, out: av.container.OutputContainer, shift_s: float = 0.0) -> bool:
        """Add the audio stream to ``out`` (before its header is written); False when there is nothing to write."""
        if self.stream_in is None:
            log.debug("'%s' has no audio stream: writing video only", self.path)
            return False
        try:
            self._stream_out = (out.add_stream_from_template(self.stream_in) if self.mode == "copy"
                                else self._add_encoder(out))
        except (ValueError, av.FFmpegError) as e:
            if self._strict:
                raise
            log.warning("%s left out: %s", self.label, error_reason(e))
            return False
        for key in _KEPT_METADATA:
            if key in self.stream_in.metadata:
                self._stream_out.metadata[key] = self.stream_in.metadata[key]
        self._out = out
        self.shift_s = shift_s
        self._packets = self._input.demux(self.stream_in)
        return True

    def _add_encoder(self, out: av.container.OutputContainer) -> av.stream.Stream:
        assert self.stream_in is not None
        ctx = self.stream_in.codec_context
        rates = av.codec.Codec(TRANSCODE_CODEC, "w").audio_rates or ()
        rate = ctx.sample_rate if ctx.sample_rate in rates or not rates else _FALLBACK_RATE
        channels = ctx.channels or 2
        layout = _AAC_LAYOUTS.get(channels, "stereo")  # PCM's "2 channels" (no order) becomes stereo
        stream = out.add_stream(TRANSCODE_CODEC, rate=rate, layout=layout)
        stream.bit_rate = _BITS_PER_CHANNEL * (channels if layout != "stereo" else 2)
        return stream

    # -- reading ----------------------------------------------------------------------------------------------
    def _start_s(self, packet: av.Packet) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        return None if ts is None or packet.time_base is None else float(ts * packet.time_base) - self.shift_s

    def _next(self) -> av.Packet | None:
        while self._pending is None and self._packets is not None:
            try:
                packet = next(self._packets, None)
            except (av.FFmpegError, OSError) as e:  # damaged audio must not cost the video
                if self._strict:
                    raise
                log.warning("%s stops at a read error: %s", self.label, error_reason(e))
                packet = None
            if packet is None:
                self._packets = None
            elif packet.dts is not None and packet.size:  # skip demux's empty flush packets
                start = self._start_s(packet)
                if start is not None and start < 0:
                    continue  # before the (restamped) video start
                self._pending = packet
        return self._pending

    # -- writing ----------------------------------------------------------------------------------------------
    def _write(self, packet: av.Packet) -> None:
        assert self._out is not None and self._stream_out is not None
        if self.mode == "copy":
            if self.shift_s:
                delta = round(Fraction(self.shift_s) / packet.time_base)
                packet.pts = None if packet.pts is None else packet.pts - delta
                packet.dts -= delta
            packet.stream = self._stream_out
            self._out.mux(packet)
            self.packets_written += 1
            return
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError):
            self.packets_lost += 1  # one damaged packet: a few ms of silence, not the end of the audio
            return
        for frame in frames:
            if frame.pts is not None and frame.time_base is not None and frame.sample_rate:
                # the encoder counts in samples: the frame's time, moved with the video
                t = float(frame.pts * frame.time_base) - self.shift_s
                frame.pts = round(t * frame.sample_rate)
                frame.time_base = Fraction(1, frame.sample_rate)
            for out_packet in self._stream_out.encode(frame):
                self._out.mux(out_packet)
                self.packets_written += 1

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a write; outside the trial an error stops this audio track only (one warning), never the video;
        but a file that cannot be written any more (full disk) fails as a whole: raised, it stops the run."""
        if self._out is None:
            return
        try:
            action()
        except (av.FFmpegError, OSError, ValueError) as e:
            if self._strict or is_write_failure(e):
                raise
            log.warning("%s stops after %d packets: %s (the video goes on)", self.label,
                        self.packets_written, error_reason(e))
            self._out = None
            self._packets = None
            self._pending = None

    def _mux_while(self, keep: Callable[[float], bool]) -> None:
        while self._out is not None and (packet := self._next()) is not None:
            start = self._start_s(packet)
            if start is not None and not keep(start):
                return
            self._pending = None
            self._write(packet)

    def pump(self, until_s: float) -> None:
        """Write the audio that starts at or before ``until_s`` (the latest video frame time): interleaving."""
        self._guarded(lambda: self._mux_while(lambda start: start <= until_s))

    def _flush(self) -> None:
        if self.mode == "transcode" and self._out is not None and self._stream_out is not None:
            for out_packet in self._stream_out.encode(None):  # the encoder's delayed packets
                self._out.mux(out_packet)
                self.packets_written += 1

    def finish(self, end_s: float) -> None:
        """Write the audio that starts before ``end_s`` (the end of the last video frame), flush, stop."""
        def last() -> None:
            self._mux_while(lambda start: start < end_s)
            self._flush()
        self._guarded(last)
        if self.packets_lost:
            log.warning("%s: %d undecodable packets skipped", self.label, self.packets_lost)
        self._out = None
        self._packets = None
        self._pending = None

    def write_first(self, n: int) -> None:
        """The trial: write the first ``n`` packets and flush."""
        for _ in range(n):
            packet = self._next()
            if packet is None:
                break
            self._pending = None
            self._write(packet)
        self._flush()

    def close(self) -> None:  # idempotent
        self._packets = None
        self._pending = None
        self._out = None
        self._input.close()


def _trial(path: str, container_format: str, mode: str, index: int = 0,
           muxings: Sequence[dict[str, str]] = ({},)) -> str | None:
    """Write the first packets of audio stream ``index`` the way the run will, into memory, trailer included, once
    per set of muxer options in ``muxings`` (every way the file is muxed): None when all work, else FFmpeg's
    reason."""
    for options in muxings:
        problem = _trial_once(path, container_format, mode, index, options)
        if problem is not None:
            return problem
    return None


def _trial_once(path: str, container_format: str, mode: str, index: int, options: dict[str, str]) -> str | None:
    with ffmpeg_errors() as logs:
        try:
            track = AudioTrack(path, mode, strict=True, index=index)
        except SinkError as e:
            return str(e)
        try:
            out = av.open(io.BytesIO(), "w", format=container_format, options=dict(options))
            try:
                track.attach(out)
                track.write_first(_TRIAL_PACKETS)
            finally:
                out.close()  # the header (when anything was written) and the trailer: where muxers refuse
        except (av.FFmpegError, OSError, ValueError) as e:
            return logs.why(e)
        finally:
            track.close()
    return None


def plan_audio(path: str | Path, container_format: str, output_name: str,
               muxings: Sequence[dict[str, str]] = ({},)) -> list[AudioTrack]:
    """How every audio stream of ``path`` goes into a ``container_format`` file muxed with each set of muxer
    options in ``muxings`` (a fragmented MP4 is written, then remuxed plain: a plan must pass both): one
    :class:`AudioTrack` per stream, in the source's order, that copies, or transcodes to AAC (said in one line); a
    stream that cannot be written is left out with one warning line naming it (empty list: no audio). SinkError when
    ``path`` cannot be read at all."""
    path = str(path)
    probe = _open_input(path)
    try:
        codecs = [stream.codec_context.name for stream in probe.streams.audio]
    finally:
        probe.close()
    if not codecs:
        log.debug("'%s' has no audio stream: writing video only", path)
        return []
    name = Path(path).name
    tracks: list[AudioTrack] = []
    for index, codec in enumerate(codecs):
        what = _label(name, index, len(codecs))
        copy_problem = _trial(path, container_format, "copy", index, muxings)
        if copy_problem is None:
            tracks.append(AudioTrack(path, "copy", index=index))
            continue
        transcode_problem = _trial(path, container_format, "transcode", index, muxings)
        if transcode_problem is None:
            log.info("%s: %s cannot be copied into %s (%s); transcoding it to AAC", what, codec, output_name,
                     copy_problem)
            tracks.append(AudioTrack(path, "transcode", index=index))
            continue
        rest = "writing video only" if len(codecs) == 1 else "the other tracks are written"
        log.warning("%s left out of %s: %s cannot be copied (%s) nor transcoded to AAC (%s); %s (--no-audio says "
                    "so without this warning; .mkv holds most audio codecs)", what, output_name, codec, copy_problem,
                    transcode_problem, rest)
    return tracks
