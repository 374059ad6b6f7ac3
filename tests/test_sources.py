"""Frame sources on real dashcam clips, damaged copies, image folders, a loopback HTTP stream and OpenCV."""
from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from segformer3d_rt.errors import SourceError
from segformer3d_rt.pipeline.sources import (
    CameraSource, ImageSource, StreamSource, SyntheticSource, VideoFileSource, open_source,
)

from conftest import SHARED_DATA

DATA = SHARED_DATA
# name: (frames, width, height, pts of the first frame) -- see shared/data/SOURCES.md
CLIPS = {
    "solidWhiteRight_960x540.mp4": (221, 960, 540, 0.0),
    "project_video_short_1280x720.mp4": (170, 1280, 720, 0.2),  # its video starts at 0.2 s (edit list)
    "test_video_1280x720.mp4": (38, 1280, 720, 0.0),
}
SHORT = "test_video_1280x720.mp4"


def clip(name: str) -> Path:
    path = DATA / "videos" / name
    if not path.is_file():
        pytest.skip(f"test clip {path} not found (the shared data directory ../shared/data is absent)")
    return path


def sample_png() -> Path:
    path = DATA / "cityscapes_samples" / "frankfurt_000000_000294_leftImg8bit.png"
    if not path.is_file():
        pytest.skip(f"test image {path} not found (the shared data directory ../shared/data is absent)")
    return path


def error_of(fn) -> str:
    with pytest.raises(SourceError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def drain(source) -> tuple[list, SourceError | None]:
    """All frames (index, pts) until the end or a SourceError."""
    got = []
    try:
        for f in source.frames():
            got.append((f.index, f.pts))
    except SourceError as e:
        return got, e
    return got, None


def remux(src: Path, dst: Path, fmt: str | None = None) -> Path:
    """Copy the video stream of ``src`` into another container (no re-encoding)."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt) as o:
        vin = i.streams.video[0]
        vout = o.add_stream_from_template(vin)
        for packet in i.demux(vin):
            if packet.dts is None:  # the flush packet
                continue
            packet.stream = vout
            o.mux(packet)
    return dst


# -- video files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CLIPS))
def test_video_file_every_frame_in_order_with_exact_timestamps(name):
    n, w, h, start = CLIPS[name]
    path = clip(name)
    with open_source(str(path)) as source:
        assert isinstance(source, VideoFileSource) and source.live is False
        assert source.frame_count == n and source.fps == pytest.approx(25.0) and source.path == str(path)
        assert source.description == f"video {name} {w}x{h} 25 fps {n} frames"
        indices, pts = [], []
        for f in source.frames():
            assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
            assert f.time_base == source.time_base and f.pts == float(f.pts_raw * f.time_base)
            indices.append(f.index)
            pts.append(f.pts)
    assert indices == list(range(n))
    assert np.all(np.diff(pts) > 0)
    assert pts[0] == pytest.approx(start, abs=1e-3)
    np.testing.assert_allclose(np.array(pts) - pts[0], np.arange(n) / 25.0, atol=1e-3)


def test_video_frames_are_rgb_like_opencv_reversed():
    path = clip(SHORT)
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(6):
            ok, bgr = cap.read()
            assert ok
    finally:
        cap.release()
    with open_source(str(path)) as source:
        image = next(f.image for f in source.frames() if f.index == 5)
    rgb_diff = np.abs(image.astype(int) - bgr[..., ::-1]).mean()
    assert rgb_diff < 2.0 and rgb_diff < np.abs(image.astype(int) - bgr).mean() / 5


def test_containers_without_a_frame_count_are_counted(tmp_path):
    src = clip(SHORT)
    for out in (remux(src, tmp_path / "clip.ts", "mpegts"), remux(src, tmp_path / "clip.mkv")):
        with open_source(str(out)) as source:
            assert source.frame_count == 38
            got, error = drain(source)
        assert error is None and [i for i, _ in got] == list(range(38))


def test_bad_inputs_fail_at_open_with_one_clear_line(tmp_path):
    def fails(spec: Path | str) -> str:
        return error_of(lambda: open_source(str(spec)))

    assert fails(tmp_path / "missing.mp4") == f"cannot open video '{tmp_path / 'missing.mp4'}': file not found"
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 100)
    assert fails(text).startswith(f"cannot open video '{text}': not a video file")
    notes = tmp_path / "notes.txt"  # FFmpeg would "decode" this as ANSI art
    notes.write_text("this is not a video\n" * 100)
    assert fails(notes) == f"cannot open video '{notes}': not a video file (it looks like text)"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert fails(empty).startswith(f"cannot open video '{empty}': ")
    # audio only: the AAC track of a clip
    audio = tmp_path / "audio.m4a"
    with av.open(str(clip(SHORT))) as i, av.open(str(audio), "w") as o:
        a_out = o.add_stream_from_template(i.streams.audio[0])
        for packet in i.demux(i.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = a_out
                o.mux(packet)
    assert fails(audio).startswith(f"cannot open video '{audio}': it has no video stream")
    # truncated before the mp4 index (this clip keeps its index at the end): nothing to open
    cut = tmp_path / "cut_project.mp4"
    cut.write_bytes(clip("project_video_short_1280x720.mp4").read_bytes()[:1_000_000])
    assert fails(cut).startswith(f"cannot open video '{cut}': ")
    assert fails("7").startswith("camera 7 could not be opened")
    assert fails("/dev/video97").startswith("camera /dev/video97 could not be opened")
    assert "unknown option 'colour'" in fails("synthetic:colour=red")
    assert "bad option 'size=12'" in fails("synthetic:size=12")
    assert "size is HxW, height first" in fails("synthetic:size=4x64")
    assert fails(tmp_path / "none.png") == f"cannot open image '{tmp_path / 'none.png'}': file not found"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert fails(broken) == f"cannot read image '{broken}': not a valid image file"


def test_truncated_video_yields_what_decodes_then_raises(tmp_path):
    data = clip(SHORT).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with open_source(str(cut)) as source:
        assert source.frame_count == 38  # what the header promises
        got, error = drain(source)
    assert 0 < len(got) < 38 and [i for i, _ in got] == list(range(len(got)))
    assert error is not None
    message = str(error)
    assert message.startswith(f"video 'cut.mp4' ended early: decoded {len(got)} of 38 frames, then:")
    assert "truncated" in message


def test_video_with_garbage_in_the_middle_skips_the_damage_and_goes_on(tmp_path):
    # FFmpeg's behaviour: undecodable packets are skipped, the rest decodes (tests/test_media_robust.py: more)
    data = bytearray(clip(SHORT).read_bytes())
    middle = len(data) // 2
    data[middle: middle + 50_000] = bytes((i * 37) % 256 for i in range(50_000))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with open_source(str(bad)) as source:
        got, error = drain(source)
        assert source.damage.packets > 0
    assert error is None and 30 <= len(got) < 38 and [i for i, _ in got] == list(range(len(got)))


def test_live_file_is_paced_at_its_frame_rate():
    with open_source(str(clip(SHORT)), live=True) as source:
        assert source.live
        t0 = time.perf_counter()
        stamps = []
        for f in source.frames():
            stamps.append(f.t_capture)
            if len(stamps) == 30:
                break
        elapsed = time.perf_counter() - t0
    assert len(stamps) == 30
    assert 1.0 < elapsed < 1.7, elapsed  # 29 frame periods of 40 ms after the first frame
    assert np.median(np.diff(stamps)) == pytest.approx(0.04, abs=0.01)


def test_close_from_another_thread_stops_iteration():
    source = open_source(str(clip(SHORT)), live=True)  # paced: iteration would take 1.5 s
    got, errors = [], []

    def consume() -> None:
        try:
            got.extend(f.index for f in source.frames())
        except BaseException as e:  # noqa: BLE001 -- the test checks there is none
            errors.append(e)

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    source.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and time.perf_counter() - t0 < 0.5
    assert not errors and 0 < len(got) < 38 and got == list(range(len(got)))
    source.close()  # idempotent
    assert list(source.frames()) == []


# -- images --------------------------------------------------------------------------------------------------------
def test_image_directory_in_natural_order_skipping_others_with_one_warning(tmp_path, caplog):
    png = sample_png()
    reference = cv2.imread(str(png))[..., ::-1]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img10.png", "img2.png"):
        (folder / name).write_bytes(png.read_bytes())
    cv2.imwrite(str(folder / "img1.jpg"), reference[..., ::-1])
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("not an image")
    (folder / "data.csv").write_text("1,2,3")
    (folder / ".hidden").write_text("ignored")
    (folder / "sub").mkdir()
    with caplog.at_level(logging.WARNING, logger="segformer3d_rt.pipeline.sources"):
        with open_source(str(folder)) as source:
            assert isinstance(source, ImageSource) and source.fps is None and not source.live
            frames = list(source.frames())
    assert [f.name for f in frames] == ["img1.jpg", "img2.png", "img10.png"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.pts is None and f.image.shape == (128, 256, 3) and f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_array_equal(frames[1].image, reference)
    assert np.abs(frames[0].image.astype(int) - reference).mean() < 5  # the JPEG copy, still RGB
    others = [r.getMessage() for r in caplog.records if "notes.txt" in r.getMessage()]
    assert len(others) == 1 and "data.csv" in others[0] and ".hidden" not in others[0]
    assert any("broken.png" in r.getMessage() for r in caplog.records)


def test_image_file_and_bad_image_directories(tmp_path):
    png = sample_png()
    with open_source(str(png)) as source:
        assert isinstance(source, ImageSource) and source.frame_count == 1
        (frame,) = list(source.frames())
    assert frame.name == png.name and frame.pts is None
    np.testing.assert_array_equal(frame.image, cv2.imread(str(png))[..., ::-1])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty" in error_of(lambda: open_source(str(empty)))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "readme.txt").write_text("hi")
    assert "readme.txt" in error_of(lambda: open_source(str(texts)))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"nope")
    with open_source(str(broken)) as source:
        assert "could be read" in error_of(lambda: list(source.frames()))


# -- network streams -----------------------------------------------------------------------------------------------
class _ClipServer:
    """Serves an MPEG-TS clip on 127.0.0.1 like a live HTTP stream (no length). ``drops`` connections are cut
    half-way; ``stall`` holds the connection open after half; once ``gone`` it answers 404."""

    def __init__(self, data: bytes) -> None:
        self.data, self.drops, self.stall, self.gone, self.requests = data, 0, False, False, 0
        self.gone_after_drop = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                if owner.gone:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                half = owner.data[: len(owner.data) // 2]
                if owner.stall:
                    self.wfile.write(half)
                    self.wfile.flush()
                    time.sleep(6)
                elif owner.drops > 0:
                    owner.drops -= 1
                    self.wfile.write(half)
                    owner.gone = owner.gone_after_drop
                else:
                    self.wfile.write(owner.data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ts_server(tmp_path):
    server = _ClipServer(remux(clip(SHORT), tmp_path / "clip.ts", "mpegts").read_bytes())
    yield server
    server.stop()


def test_url_reconnects_after_a_drop_and_keeps_counting(ts_server, tmp_path, caplog):
    with av.open(str(tmp_path / "clip.ts")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    ts_server.drops = 1
    frames = []
    with caplog.at_level(logging.WARNING, logger="segformer3d_rt.pipeline.sources"):
        with open_source(ts_server.url, timeout_s=3) as source:
            assert isinstance(source, StreamSource) and source.live and source.fps == pytest.approx(25.0)
            for f in source.frames():
                frames.append((f.index, f.pts, source.reconnects, f.image))
                if len(frames) == 50:
                    break
    assert len(frames) == 50 and source.reconnects >= 1 and ts_server.requests >= 2
    assert [f[0] for f in frames] == list(range(50))
    assert np.all(np.diff([f[1] for f in frames]) > 0)
    before = [f for f in frames if f[2] == 0]
    assert 0 < len(before) < 38  # cut mid-stream
    after = frames[len(before)]  # the replayed stream starts at its first frame again
    assert np.abs(after[3].astype(int) - first).mean() < 2.0
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_url_gives_up_when_it_cannot_reconnect(ts_server):
    ts_server.drops, ts_server.gone_after_drop = 1, True
    with open_source(ts_server.url, timeout_s=1.0) as source:
        t0 = time.perf_counter()
        got, error = drain(source)
    assert 0 < len(got) < 38 and error is not None
    assert time.perf_counter() - t0 < 4.0
    assert str(error).startswith(f"lost stream {ts_server.url}: could not reconnect within 1 s")
    assert "404" in str(error)


def test_unreachable_url_fails_quickly():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.mp4"
    t0 = time.perf_counter()
    message = error_of(lambda: open_source(url, timeout_s=1.0))
    assert time.perf_counter() - t0 < 2.5
    assert message.startswith(f"cannot reach {url}: ") and "refused" in message.lower()
    t0 = time.perf_counter()
    error_of(lambda: open_source(url, timeout_s=5.0, reconnect=False))  # no retries
    assert time.perf_counter() - t0 < 0.5
    secret = f"rtsp://admin:hunter2@127.0.0.1:{port}/cam"  # passwords stay out of messages
    message = error_of(lambda: open_source(secret, timeout_s=0.3))
    assert "hunter2" not in message and message.startswith(f"cannot reach rtsp://admin:***@127.0.0.1:{port}/cam: ")


def test_close_from_another_thread_ends_a_stalled_network_read(ts_server):
    ts_server.stall = True
    source = open_source(ts_server.url, timeout_s=1.0)
    got, errors = [], []

    def consume() -> None:
        try:
            got.extend(f.index for f in source.frames())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.perf_counter() + 5
    while len(got) < 5 and time.perf_counter() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # now blocked in a read: the server sends nothing more
    t0 = time.perf_counter()
    source.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and time.perf_counter() - t0 < 2.0  # bounded by the read timeout
    assert not errors and len(got) >= 5 and source.reconnects == 0


# -- cameras (OpenCV) ----------------------------------------------------------------------------------------------
def test_camera_reopens_after_read_failures(caplog):
    path = str(clip(SHORT))  # an OpenCV capture of a file ends like an unplugged camera: read() fails
    with caplog.at_level(logging.WARNING, logger="segformer3d_rt.pipeline.sources"):
        with CameraSource(0, opener=lambda: cv2.VideoCapture(path), timeout_s=3) as source:
            assert source.live and source.fps == pytest.approx(25.0)
            frames = []
            for f in source.frames():
                frames.append((f.index, f.pts, f.image[::97, ::97].copy()))
                if len(frames) == 45:
                    break
    assert source.reconnects == 1 and [f[0] for f in frames] == list(range(45))
    assert np.all(np.diff([f[1] for f in frames]) > 0)
    np.testing.assert_array_equal(frames[38][2], frames[0][2])  # reopened: the first frame again, RGB
    assert any("reopening" in r.getMessage() for r in caplog.records)


def test_camera_gives_up_after_timeout():
    path = str(clip(SHORT))
    opened = []

    def opener() -> cv2.VideoCapture:  # works once, then the camera is gone
        opened.append(1)
        return cv2.VideoCapture(path) if len(opened) == 1 else cv2.VideoCapture()

    with CameraSource("/dev/video9", opener=opener, timeout_s=1.0) as source:
        t0 = time.perf_counter()
        got, error = drain(source)
    assert len(got) == 38 and error is not None and time.perf_counter() - t0 < 3.0
    assert str(error) == "camera /dev/video9 delivered no frames for 1 s and could not be reopened"
    assert source.reconnects == 0 and len(opened) >= 2


# -- synthetic -----------------------------------------------------------------------------------------------------
def test_synthetic_frames_match_the_world():
    synthetic = pytest.importorskip("segformer3d_rt.synthetic")
    with open_source("synthetic:seed=3,size=64x128,fps=25,frames=5") as source:
        assert isinstance(source, SyntheticSource) and not source.live
        assert source.frame_count == 5 and source.fps == 25.0
        frames = list(source.frames())
    assert [f.index for f in frames] == list(range(5))
    assert [f.pts_raw for f in frames] == list(range(5))
    np.testing.assert_allclose([f.pts for f in frames], np.arange(5) / 25.0)
    assert all(f.image.shape == (64, 128, 3) and f.image.dtype == np.uint8 for f in frames)
    world = synthetic.SyntheticWorld(seed=3, height=64, width=128, fps=25.0)
    np.testing.assert_array_equal(frames[2].image, world.render(2).image)
    with open_source("synthetic:") as source:
        assert source.frame_count is None and "512x256" in source.description and source.fps == 25.0


def test_synthetic_live_is_paced():
    pytest.importorskip("segformer3d_rt.synthetic")
    with open_source("synthetic:size=32x64,frames=6", live=True) as source:
        assert source.live
        t0 = time.perf_counter()
        n = sum(1 for _ in source.frames())
    assert n == 6 and 0.18 < time.perf_counter() - t0 < 0.6  # 5 periods of 40 ms


def test_single_threaded_decoding_gives_the_same_frames():
    """decode_threads=1 (CPU runs) and FFmpeg's threaded default decode the same pixels with the same times."""
    path = clip(SHORT)
    seen = []
    for threads in (0, 1):
        with VideoFileSource(path, decode_threads=threads) as src:
            seen.append([(f.index, f.pts, f.image.copy()) for f in src.frames()])
    assert len(seen[0]) == len(seen[1]) == CLIPS[SHORT][0]
    for (i0, t0, a), (i1, t1, b) in zip(*seen):
        assert (i0, t0) == (i1, t1) and np.array_equal(a, b)
