#!/usr/bin/python3
"""Serve a real clip over RTSP on loopback, like an IP camera, with GStreamer's RTSP server.

Runs under the system Python (python3-gi), not the project's virtual environment:

    apt-get install -y gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi
    /usr/bin/python3 scripts/rtsp_clip_server.py clip.mp4 --port 8554       # rtsp://127.0.0.1:8554/clip
    /usr/bin/python3 scripts/rtsp_clip_server.py frames/ --port 8554        # a live MJPEG camera

Two kinds of stream:

* a video file (H.264 in .mp4/.mov/.mkv/.ts): sent as it is in the file (no re-encoding), so a client decodes
  exactly the file's frames. Each client gets its own session from the file's start, paced at the file's
  frame rate, and the server announces the file's length: a finite stream (a recording).
* a folder of JPEG frames named 00000.jpg, 00001.jpg, ... (baseline, sides multiples of 8): one endless live
  MJPEG stream shared by every client, looping over the frames at ``--fps``, the JPEG files sent as they are
  (no length: a camera). The frame it starts at is a function of the wall clock since ``--epoch``, so a
  server restarted with the same epoch carries on where a real camera would be instead of starting again.

Prints ``READY <url>`` on stdout once it listens; SIGTERM or SIGINT stop it.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

_DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".mkv": "matroskademux",
             ".ts": "tsdemux"}


def _quoted(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _file_launch(path: Path) -> str:
    demux = _DEMUXERS.get(path.suffix.lower())
    if demux is None:
        raise SystemExit(f"rtsp_clip_server: unsupported container {path.suffix!r} (one of {sorted(_DEMUXERS)})")
    # config-interval=-1: SPS/PPS before every key frame, whatever the file's packets carry
    return f"( filesrc location={_quoted(path)} ! {demux} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"


class _Camera:
    """A folder of JPEG frames as an endless live stream: frame ``(now - epoch) * fps`` first, then on round and
    round. The JPEG files are sent as they are (no re-encoding), timestamped at ``fps`` so the server paces them."""

    launch = "( appsrc name=camera format=time ! jpegparse ! rtpjpegpay name=pay0 pt=26 )"

    def __init__(self, folder: Path, fps: int, epoch: float) -> None:
        self.frames: list[bytes] = []
        while (folder / f"{len(self.frames):05d}.jpg").is_file():
            self.frames.append((folder / f"{len(self.frames):05d}.jpg").read_bytes())
        if not self.frames:
            raise SystemExit(f"rtsp_clip_server: no 00000.jpg in {folder}")
        self.fps, self.epoch = fps, epoch

    def configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        """A new media (the first client): start where a camera running since the epoch is now."""
        appsrc = media.get_element().get_by_name("camera")
        appsrc.set_property("caps", Gst.Caps.from_string(f"image/jpeg,framerate={self.fps}/1"))
        state = {"next": int((time.time() - self.epoch) * self.fps), "sent": 0}

        def need_data(src: Gst.Element, _length: int) -> None:
            data = self.frames[state["next"] % len(self.frames)]
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = buf.dts = state["sent"] * Gst.SECOND // self.fps
            buf.duration = Gst.SECOND // self.fps
            state["next"] += 1
            state["sent"] += 1
            src.emit("push-buffer", buf)

        appsrc.connect("need-data", need_data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", type=Path, help="an H.264 video file, or a folder of 00000.jpg, 00001.jpg, ...")
    p.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (0: any free port)")
    p.add_argument("--mount", default="/clip", help="the stream's path in the URL")
    p.add_argument("--fps", type=int, default=25, help="frame rate of a JPEG folder")
    p.add_argument("--epoch", type=float, default=None,
                   help="wall-clock time (Unix seconds) the JPEG camera started at; default: now")
    args = p.parse_args(argv)

    if args.clip.is_dir():
        camera = _Camera(args.clip, args.fps, time.time() if args.epoch is None else args.epoch)
        launch, shared = camera.launch, True
    elif args.clip.is_file():
        launch, shared, camera = _file_launch(args.clip.resolve()), False, None
    else:
        raise SystemExit(f"rtsp_clip_server: no such file or folder {args.clip}")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(shared)
    if camera is not None:
        factory.connect("media-configure", camera.configure)
    # RTP inside the RTSP connection only: no UDP ports, and a server that goes away is seen at once
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory(args.mount, factory)
    server.attach(None)
    port = server.get_bound_port()
    if port <= 0:  # attach() only logs a bind failure (port taken)
        raise SystemExit(f"rtsp_clip_server: cannot listen on 127.0.0.1:{args.port}")

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
