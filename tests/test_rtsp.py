"""RTSP for real: GStreamer's RTSP server on loopback serves a real clip; the server is killed and restarted
under the client. The server (scripts/rtsp_clip_server.py) runs under the system Python and needs
``apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi``;
without them every test here is skipped, saying so."""
from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from segformer3d_rt.errors import SourceError
from segformer3d_rt.pipeline.sources import StreamSource, open_source

from helpers import partial_files, partial_size
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "scripts" / "rtsp_clip_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL = ("apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
           "python3-gi")
RECORDING = "solidWhiteRight_960x540.mp4"  # 221 frames, 25 fps, 8.84 s, H.264 High with a key frame every 30
CAMERA_FPS = 10
CAMERA_SIZE = (480, 272)  # width, height: RTP/JPEG carries sides in 8-pixel blocks


def _server_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no system Python at {SYSTEM_PYTHON} for GStreamer's RTSP server ({INSTALL})"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "missing = [e for e in ('filesrc', 'qtdemux', 'h264parse', 'rtph264pay', 'appsrc', 'jpegparse',"
             " 'rtpjpegpay') if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot probe GStreamer's RTSP server: {e} ({INSTALL})"
    if r.returncode != 0:
        return f"GStreamer's RTSP server is not installed for {SYSTEM_PYTHON} ({INSTALL})"
    if r.stdout.strip():
        return f"GStreamer lacks the elements {r.stdout.strip()} ({INSTALL})"
    return None


@pytest.fixture(scope="module")
def gst_rtsp() -> None:
    why = _server_missing()
    if why:
        pytest.skip(why)


class RtspServer:
    """scripts/rtsp_clip_server.py as a subprocess: ``kill()`` it (the camera goes away), ``start()`` it again
    on the same port."""

    def __init__(self, media: Path, *extra: str) -> None:
        self.media, self.extra = media, extra
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen | None = None

    def start(self, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER), str(self.media), "--port", str(self.port), *self.extra],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.1, deadline - time.monotonic()))
            line = self.proc.stdout.readline() if ready else ""
            if line.startswith("READY "):
                self.url = line.split()[1]
                self.port = int(self.url.split(":")[2].split("/")[0])
                return
            err = self.kill()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the RTSP server did not start: {err}")
            time.sleep(0.2)  # the port may still be held by the previous server's connections

    def kill(self) -> str:
        """SIGKILL: the connection drops with no goodbye, like a camera losing power or its network."""
        if self.proc is None:
            return ""
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        self.proc = None
        return err.strip()


@pytest.fixture
def rtsp_server(gst_rtsp):
    servers: list[RtspServer] = []

    def make(media: Path, *extra: str) -> RtspServer:
        server = RtspServer(media, *extra)
        servers.append(server)
        server.start()
        return server

    yield make
    for s in servers:
        s.kill()


def shared_clip(name: str) -> Path:
    path = SHARED_DATA / "videos" / name
    if not path.is_file():
        pytest.skip(f"test clip {path} not found (the shared data directory ../shared/data is absent)")
    return path


def digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (48, 27), interpolation=cv2.INTER_AREA).astype(np.float32)


def camera_frames(clip: Path, folder: Path) -> np.ndarray:
    """The clip's frames as a JPEG folder for the camera server; returns their thumbnails (RGB)."""
    folder.mkdir()
    thumbs = []
    with av.open(str(clip)) as c:
        for i, f in enumerate(c.decode(video=0)):
            rgb = cv2.resize(f.to_ndarray(format="rgb24"), CAMERA_SIZE, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            thumbs.append(thumb(rgb))
    return np.stack(thumbs)


def which_frame(image: np.ndarray, thumbs: np.ndarray) -> tuple[int, float]:
    """The reference frame nearest to ``image`` and how far it is (mean absolute difference, 0-255)."""
    d = np.abs(thumbs - thumb(image)[None]).mean(axis=(1, 2, 3))
    i = int(d.argmin())
    return i, float(d[i])


def later(fn, delay_s: float) -> threading.Thread:
    t = threading.Timer(delay_s, fn)
    t.start()
    return t


# -- a recording (finite stream): resumed exactly ---------------------------------------------------------------
def test_recording_survives_the_server_restarting_and_resumes_without_repeats(rtsp_server):
    clip = shared_clip(RECORDING)
    with av.open(str(clip)) as c:
        reference = [digest(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    server = rtsp_server(clip)
    got = []  # (index, pts, digest, reconnects)
    restart: threading.Thread | None = None
    with open_source(server.url, timeout_s=8.0) as source:
        assert isinstance(source, StreamSource) and source.live and source.fps == pytest.approx(25.0)
        assert source.frame_count == len(reference)  # the server announces the length: a finite stream
        for f in source.frames():
            got.append((f.index, f.pts, digest(f.image), source.reconnects))
            if len(got) == 60:
                server.kill()  # mid-clip
                restart = later(server.start, 1.0)
    restart.join()
    assert source.reconnects == 1
    assert [g[0] for g in got] == list(range(len(got)))
    assert np.all(np.diff([g[1] for g in got]) > 0)  # strictly increasing across the restart
    before = sum(1 for g in got if g[3] == 0)
    assert before >= 60
    digests = [g[2] for g in got]
    assert len(set(digests)) == len(digests)  # no frame twice
    # the restarted server sends the file from its start: the client resumes after the last frame it had, so
    # it delivers the file's frames, bit-exact and in order, none repeated and none lost
    assert digests == reference
    pts = np.array([g[1] for g in got])
    assert np.allclose(np.diff(pts), 0.04, atol=1e-3)  # the file's own timing, kept through the restart


# -- a live camera: carries on after it comes back ----------------------------------------------------------------
def test_live_camera_survives_the_server_going_away_and_coming_back(rtsp_server, tmp_path):
    thumbs = camera_frames(shared_clip(RECORDING), tmp_path / "frames")  # 221 frames: a 22 s loop at 10 FPS
    epoch = f"{time.time():.3f}"
    server = rtsp_server(tmp_path / "frames", "--fps", str(CAMERA_FPS), "--epoch", epoch, "--mount", "/cam")
    got = []  # (index, pts, image, reconnects, wall)
    restart: threading.Thread | None = None
    with open_source(server.url, timeout_s=8.0) as source:
        assert source.live and source.frame_count is None  # live: no length
        for f in source.frames():
            got.append((f.index, f.pts, f.image, source.reconnects, time.monotonic()))
            if len(got) == 20:
                server.kill()
                restart = later(server.start, 1.0)  # the same epoch: the camera has moved on meanwhile
            if source.reconnects and sum(1 for g in got if g[3]) == 20:
                break
    restart.join()
    assert source.reconnects == 1
    assert [g[0] for g in got] == list(range(len(got)))
    pts = np.array([g[1] for g in got])
    assert np.all(np.diff(pts) > 0)
    cut = next(i for i, g in enumerate(got) if g[3])  # the first frame after reconnecting
    assert cut >= 20
    # within a connection: the camera's own timing; across the drop-out: the real time that passed
    steps = np.diff(pts)
    assert np.allclose(np.delete(steps, cut - 1), 1 / CAMERA_FPS, atol=1e-3)
    gap = pts[cut] - pts[cut - 1]
    assert gap > 1.0 and gap == pytest.approx(got[cut][4] - got[cut - 1][4], abs=0.5)
    # every frame is a frame of the clip, each once, in the camera's order: the frames of the drop-out are
    # lost (as with any camera), none is repeated or reordered
    matches = [which_frame(g[2], thumbs) for g in got]
    assert max(m[1] for m in matches) < 4.0
    shown = [m[0] for m in matches]
    assert np.all(np.diff(shown) > 0), shown
    assert shown[cut] - shown[cut - 1] >= CAMERA_FPS  # at least a second of the camera's frames went by
    assert len({digest(g[2]) for g in got}) == len(got)


# -- it stays away: one line, within the timeout ------------------------------------------------------------------
def test_gives_up_with_one_line_when_the_server_stays_away(rtsp_server):
    server = rtsp_server(shared_clip(RECORDING))
    got = []
    with open_source(server.url, timeout_s=1.5) as source:
        with pytest.raises(SourceError) as info:
            for f in source.frames():
                got.append(f.index)
                if len(got) == 10:
                    server.kill()
                    t0 = time.perf_counter()
    waited = time.perf_counter() - t0
    message = str(info.value)
    assert "\n" not in message and got == list(range(len(got))) and len(got) < 221
    assert message.startswith(f"lost stream {server.url}: could not reconnect within 1.5 s (")
    assert "refused" in message.lower()
    assert 1.5 <= waited < 3.0  # the frames already buffered, then 1.5 s of retries, not less
    assert source.reconnects == 0


def test_a_wrong_path_on_a_real_server_fails_at_open_with_one_line(rtsp_server):
    server = rtsp_server(shared_clip(RECORDING))
    url = server.url.replace("/clip", "/nothing-here")
    with pytest.raises(SourceError) as info:
        open_source(url, timeout_s=1.0)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot reach {url}: ")
    assert "404" in message or "not found" in message.lower()


# -- the whole run command: follows the camera, reconnects, then gives up and keeps what it made --------------------
@pytest.mark.slow
def test_run_follows_a_camera_through_a_restart_then_stops_with_one_line(rtsp_server, tmp_path):
    import torch

    from segformer3d_rt import build_model, save_checkpoint

    torch.manual_seed(0)
    weights = save_checkpoint(build_model("b0"), tmp_path / "b0.safetensors")
    camera_frames(shared_clip(RECORDING), tmp_path / "frames")
    server = rtsp_server(tmp_path / "frames", "--fps", str(CAMERA_FPS), "--epoch", f"{time.time():.3f}")
    out, stats = tmp_path / "rec.mp4", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segformer3d_rt", "run", server.url, "-o", str(out), "--stats-json", str(stats),
         "--weights", str(weights), "--timeout", "2", "--input-size", "128x256", "--preset", "ultrafast",
         "--progress", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def written(more_than: int, within_s: float) -> int:
            """Wait until the mp4 being written grows past ``more_than`` bytes: frames are flowing."""
            deadline = time.monotonic() + within_s
            while time.monotonic() < deadline and proc.poll() is None:
                size = partial_size(out)
                if size > more_than:
                    return size
                time.sleep(0.1)
            raise AssertionError(f"no frames written (rc {proc.poll()}): {proc.stderr.read() if proc.poll() else ''}")

        size = written(20_000, 120.0)  # past the header (a fragmented MP4 writes it first): frames
        time.sleep(3.0)  # live: the newest frame wins, so a slow machine records only some of them
        server.kill()
        time.sleep(0.5)
        server.start()  # back within the 2 s timeout
        size = written(size + 20_000, 30.0)
        time.sleep(3.0)
        server.kill()  # gone for good
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    # the log tells the drop-outs as they happen; the end is one error line, the last
    assert [ln for ln in lines if "error" in ln.lower()] == lines[-1:], err
    assert lines[-1] == f"segformer3d-rt: error: lost stream {server.url}: could not reconnect within 2 s " \
                        "(Connection refused)", err
    assert sum("reconnected (1 so far)" in ln for ln in lines) == 1
    report = json.loads(stats.read_text())
    assert report["reconnects"] == 1 and report["error"]
    # finished work is kept: the recording is complete and playable, its timestamps increasing
    assert out.is_file() and not partial_files(out)
    with av.open(str(out)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert len(pts) == report["frames"]["out"] > 20
    assert np.all(np.diff(pts) > 0)
    shutil.rmtree(tmp_path / "frames")
