"""Crash-safe recordings: while a video is written, the file on disk plays up to its last fragment; when the run
ends it is finalised into a normal file with its index.

Why: a plain MP4 (or MOV) keeps its index, the ``moov`` box, at the end of the file, written only by a clean
finish. A run killed (``kill -9``), a power cut or a full disk leaves an mp4 without it, which no player opens,
however many frames it holds. So MP4/MOV are written *fragmented* (an empty ``moov`` first, then self-describing
``moof`` + ``mdat`` fragments of at most a second: each plays once written) and remuxed at the end, stream copy, no
re-encode, into a plain file with one index (what players and editors seek best in); Matroska is written in
clusters of at most a second, which it plays from as they are, and its muxer's trailer adds the index. Whatever
stops a run, the file on disk plays up to about a second before the stop."""
from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from pathlib import Path

import av

from ...runtime.paths import create_temp
from ..media import error_reason

__all__ = ["DEFRAGMENTED", "FRAGMENT_S", "Syncer", "cut_to_last_fragment", "defragment", "describe_kept",
           "muxer_options", "what_plays"]

log = logging.getLogger(__name__)

FRAGMENT_S = 1.0  # the most a kill costs: fragments (MP4/MOV) and clusters (Matroska) are cut at least this often
_FRAGMENTED_MP4 = {
    # frag_keyframe: a new fragment at every keyframe; frag_duration cuts one at least every FRAGMENT_S between
    #   keyframes as well (x264 puts one only every 250 frames); a fragment needs no keyframe to play on from the
    #   previous one.
    # empty_moov: the track headers (no samples) come first, so every fragment after them plays without an index
    #   at the end.
    # default_base_moof: sample offsets counted from each fragment's own moof (what fragment readers expect).
    # delay_moov: those headers are written with the first fragment, once its timestamps are known: the edit list
    #   keeps the source's start time and the B-frame delay (without it the video starts at 0, shifted).
    "movflags": "frag_keyframe+empty_moov+default_base_moof+delay_moov",
    "frag_duration": str(round(FRAGMENT_S * 1_000_000)),  # microseconds
    # each packet written goes to the file at once: a fragment reaches the disk when it is cut, not 32 kB later
    "flush_packets": "1",
}
_MUXER_OPTIONS = {
    "mp4": _FRAGMENTED_MP4,
    "mov": _FRAGMENTED_MP4,
    "matroska": {"cluster_time_limit": str(round(FRAGMENT_S * 1000)), "flush_packets": "1"},  # milliseconds
}
DEFRAGMENTED = ("mp4", "mov")  # the formats written fragmented and remuxed into one index at the end
_SYNC_EVERY_S = 2.0


def muxer_options(container_format: str) -> dict[str, str]:
    """The muxer options that make a ``container_format`` file play while it is written (see the module)."""
    return dict(_MUXER_OPTIONS.get(container_format, {}))


def defragment(fragmented: Path, container_format: str, final: Path) -> Path:
    """Remux the finished ``fragmented`` file (stream copy, every stream, in order) into a plain
    ``container_format`` file with its index, under a new temporary name beside ``final``; returns that name. On
    any failure (a full disk: the copy needs the space of the file once more) the copy is removed and the error
    raised; ``fragmented`` is left as it was, whole, and plays."""
    temp, fd = create_temp(final)
    os.close(fd)
    try:
        with av.open(str(fragmented)) as src:
            out = av.open(str(temp), "w", format=container_format)
            try:
                streams = {s.index: out.add_stream_from_template(s) for s in src.streams
                           if s.type in ("video", "audio")}
                for s in src.streams:
                    if s.index in streams:
                        streams[s.index].metadata.update(s.metadata)
                for packet in src.demux():
                    if packet.dts is None or packet.stream.index not in streams:
                        continue  # the demuxer's empty flush packets
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
            finally:
                out.close()  # the index
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return temp


def cut_to_last_fragment(path: Path) -> None:
    """A fragmented MP4/MOV that a full disk stopped part-way (a write cut anywhere, even inside a fragment's
    header) opens only if it ends on a whole box: cut it back to the end of its last whole fragment."""
    size = path.stat().st_size
    good = pos = 0
    with open(path, "r+b") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) == 16:  # a 64-bit size follows
                length = struct.unpack(">Q", head[8:])[0]
            elif length == 0:  # to the end of the file
                length = size - pos
            if length < 8 or pos + length > size:
                break
            pos += length
            if kind != b"moof":  # a moof is whole only with the mdat after it
                good = pos
        if good < size:
            f.truncate(good)
            log.debug("%s: cut back from %d to %d bytes (its last whole fragment)", path, size, good)


def what_plays(path: Path) -> tuple[int, str | None]:
    """What a player gets from ``path``: (the video frames whose data is whole in the file, None) once its first
    frame decodes, else (0, why not). Reads the file through (demuxing, not decoding, past the first frame)."""
    try:
        size = path.stat().st_size
        with av.open(str(path)) as c:
            if not c.streams.video:
                return 0, "it holds no video"
            stream = c.streams.video[0]
            frames, shown = 0, False
            for packet in c.demux(stream):
                if not packet.size:
                    continue
                if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > size:
                    break  # cut short
                frames += 1
                if not shown and frames <= 64:
                    shown = bool(packet.decode())
            if not shown:
                shown = bool(stream.codec_context.decode(None))  # the decoder's delayed frames
    except (av.FFmpegError, OSError, ValueError) as e:
        return 0, error_reason(e)
    return (frames, None) if shown else (0, "no frame in it decodes")


def describe_kept(path: Path) -> str:
    """``'PATH' (it plays: N frames)`` or ``'PATH' (it does not play: why)``."""
    frames, problem = what_plays(path)
    if problem is None:
        return f"'{path}' (it plays: {frames} frame{'s' * (frames != 1)})"
    return f"'{path}' (it does not play: {problem})"


class Syncer:
    """Flushes a file being written to the disk (``fsync``) every few seconds, from a thread of its own so the
    writer never waits on the disk: the page cache may hold half a minute of writes, which a power cut loses; with
    this the disk holds the fragments written up to the last sync. ``fd``: a descriptor open on the file (the
    caller's, still its own to close after ``stop``)."""

    def __init__(self, fd: int, every_s: float = _SYNC_EVERY_S) -> None:
        self._fd = fd
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-fsync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                os.fsync(self._fd)
            except OSError as e:  # the writer meets the same disk and says so; this only narrows a power cut's loss
                log.debug("fsync: %s", e)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
