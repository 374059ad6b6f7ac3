"""`serve`: the real server on loopback with the bundled network, its REST API, MJPEG, /metrics (read with
prometheus_client's own parser), a stalled stream beside live ones, add/remove cycles, RTSP killed and restarted,
SIGTERM with a recording, and the token. The browser side is in test_serve_browser.py."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serve needs the [serve] extra (fastapi, uvicorn, prometheus-client)")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from segformer3d_rt.errors import UserError  # noqa: E402
from segformer3d_rt.pipeline.histogram import LogHistogram  # noqa: E402
from segformer3d_rt.pipeline.sources.dispatch import source_kind  # noqa: E402
from segformer3d_rt.runtime.sizes import model_input_size, padded_box  # noqa: E402
from segformer3d_rt.serve.batcher import batch_sizes  # noqa: E402
from segformer3d_rt.serve.config import (ServeConfig, StreamSpec, build_serve_config,  # noqa: E402
                                         load_serve_file, run_template)
from segformer3d_rt.serve.metrics import SERIES_PER_STREAM  # noqa: E402
from segformer3d_rt.serve.page import _js_string  # noqa: E402
from segformer3d_rt.serve.server import Server  # noqa: E402
from segformer3d_rt.serve.slots import LatestFrame, Mailbox  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "synthetic-drive.mp4"
BOX = (128, 256)
SYN = "synthetic:size=128x256,fps={fps}"


# -- pieces ----------------------------------------------------------------------------------------------------
def test_mailbox_keeps_the_newest_and_counts_what_it_replaced():
    box: Mailbox[int] = Mailbox()
    assert box.take() is None
    for i in range(5):
        box.put(i)
    assert box.dropped == 4 and box.take() == 4 and box.take() is None
    box.restore(7)  # given back while empty: kept
    box.put(8)
    box.restore(9)  # a newer one is there: the old one is the drop
    assert box.take() == 8 and box.dropped == 6
    t0 = time.perf_counter()
    threading.Timer(0.2, box.put, (1,)).start()
    assert box.take(timeout=5.0) == 1 and time.perf_counter() - t0 < 2.0


def test_latest_frame_encodes_each_frame_once_for_every_viewer():
    slot = LatestFrame()
    assert slot.jpeg(0, 0.05) == (0, None)
    rng = np.random.default_rng(0)
    slot.publish(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    n, a = slot.jpeg(0, 1.0)
    n2, b = slot.jpeg(0, 1.0)
    assert n == n2 == 1 and a is b  # the second viewer got the same bytes object: not encoded again
    slot.publish(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    n3, c = slot.jpeg(1, 1.0)
    assert n3 == 2 and c != a and c[:2] == b"\xff\xd8"
    slot.close()
    t0 = time.perf_counter()
    assert slot.wait_newer(2, 10.0)[0] == 2 and time.perf_counter() - t0 < 1.0  # a closed slot never waits


def test_batch_sizes_and_the_one_padded_shape():
    assert batch_sizes(1) == (1,) and batch_sizes(4) == (1, 2, 4) and batch_sizes(6) == (1, 2, 4, 6)
    for box in [(128, 256), (288, 512), (300, 500)]:
        H, W = padded_box(box)
        assert H % 32 == 0 and W % 32 == 0
        for frame in [(720, 1280), (480, 640), (1080, 1080), (100, 1900), (1900, 100)]:
            h, w = model_input_size(frame, box)
            assert h <= H and w <= W, (box, frame)


def test_histogram_cumulative_counts_match_numpy():
    rng = np.random.default_rng(1)
    v = rng.lognormal(-3, 1, 5000)
    h = LogHistogram()
    h.add_many(v)
    for b in (0.001, 0.01, 0.05, 0.3):
        exact = int((v <= b).sum())
        near = int(((v > b * 0.99) & (v <= b * 1.01)).sum())  # the bucket's width either side
        assert abs(h.count_le(b) - exact) <= near
    assert h.count_le(math.inf) == 5000


def test_source_kinds():
    assert source_kind("synthetic:fps=5") == "synthetic" and source_kind("rtsp://h/s") == "url"
    assert source_kind("0") == "camera" and source_kind("/dev/video2") == "camera"
    assert source_kind("/etc/passwd") == "file" and source_kind("file:///etc/passwd") == "file"


def test_stream_specs_and_settings_are_checked_in_one_line(tmp_path):
    s = StreamSpec.parse("front=rtsp://cam/stream")
    assert (s.name, s.source, s.kind, s.view) == ("front", "rtsp://cam/stream", "url", "overlay")
    for bad in ["front", "=x", "a<b>=synthetic:", "x" * 65 + "=synthetic:"]:
        with pytest.raises(UserError):
            StreamSpec.parse(bad)
    with pytest.raises(UserError, match="view"):
        StreamSpec.from_mapping({"name": "a", "source": "synthetic:", "view": "attention"})
    with pytest.raises(UserError, match="token"):
        build_serve_config({"host": "0.0.0.0", "streams": ["a=synthetic:"]}, {})
    with pytest.raises(UserError, match="given twice"):
        build_serve_config({"streams": ["a=synthetic:", "a=synthetic:"]}, {})
    with pytest.raises(UserError, match="cannot be set"):
        run_template({"source": "x"})
    toml = tmp_path / "serve.toml"
    toml.write_text('port = 0\nmax_batch = 2\n[run]\ninput_size = "128x256"\n'
                    '[streams.demo]\nsource = "samples/synthetic-drive.mp4"\nloop = true\nview = "depth"\n')
    values, run, specs = load_serve_file(toml)
    assert values == {"port": 0, "max_batch": 2} and run == {"input_size": "128x256"}
    assert [(s.name, s.loop, s.view) for s in specs] == [("demo", True, "depth")]
    cfg = build_serve_config({"config": str(toml), "streams": ["b=synthetic:"]}, {})
    assert [s.name for s in cfg.specs] == ["demo", "b"] and cfg.run.input_size == (128, 256)
    toml.write_text("port = 'x'\n")
    with pytest.raises(UserError, match="'port' in"):
        build_serve_config({"config": str(toml)}, {})
    toml.write_text("[streams.a]\nsource = 3\n")
    with pytest.raises(UserError, match="streams.a.source"):
        load_serve_file(toml)


def test_page_strings_cannot_close_their_script():
    text = _js_string("</script><img src=x onerror=alert(1)>&")
    assert "<" not in text and ">" not in text and "&" not in text and json.loads(text).startswith("</script>")


# -- the server ------------------------------------------------------------------------------------------------
class Client:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url, self.token = url.rstrip("/"), token

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None,
             headers: dict | None = None) -> tuple[int, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                payload = r.read()
                status = r.status
                kind = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            payload, status, kind = e.read(), e.code, e.headers.get("Content-Type", "")
        return status, (json.loads(payload) if "json" in kind else payload)

    def get(self, path: str) -> object:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def stream(self, name: str) -> dict:
        return self.get(f"/api/streams/{name}")

    def wait(self, name: str, cond, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.stream(name)
            if cond(s):
                return s
            assert time.monotonic() < deadline, f"stream {name} never got there: {s['state']} {s['error']} {s['frames']}"
            time.sleep(0.2)


def serve_config(specs: list[str], timeout_s: float | None = None, **kw) -> ServeConfig:
    given = {"streams": specs, "port": 0, "max_wait_ms": 5.0, **kw}
    run = {"input_size": BOX} | ({"timeout_s": timeout_s} if timeout_s else {})
    return build_serve_config(given, run)


@pytest.fixture
def server():
    running: list[Server] = []

    def start(specs: list[str], **kw) -> tuple[Server, Client]:
        s = Server(serve_config(specs, **kw)).start()
        running.append(s)
        return s, Client(s.url, kw.get("token"))

    yield start
    for s in running:
        s.stop()


def test_streams_through_the_api_while_the_server_runs(server):
    srv, c = server(["a=" + SYN.format(fps=15)])
    assert c.get("/healthz") == {"ok": True} and c.get("/readyz")["ready"] is True
    a = c.wait("a", lambda s: s["frames"]["out"] >= 5)
    assert a["state"] == "running" and a["kind"] == "synthetic"
    status, body = c.call("POST", "/api/streams", {"name": "b", "source": SYN.format(fps=10), "view": "depth"})
    assert status == 201 and body["name"] == "b" and body["view"] == "depth"
    c.wait("b", lambda s: s["frames"]["out"] >= 3)
    names = [s["name"] for s in c.get("/api/streams")["streams"]]
    assert names == ["a", "b"]
    # the rendered frame is the stream's own size, drawn in the view asked for
    status, jpg = c.call("GET", "/streams/b/frame.jpg")
    img = av.open(__import__("io").BytesIO(jpg)).decode(video=0).__next__().to_ndarray(format="rgb24")
    assert status == 200 and img.shape == (128, 256, 3)
    status, body = c.call("PATCH", "/api/streams/b", {"view": "side-by-side"})
    assert status == 200 and body["view"] == "side-by-side"
    n = c.stream("b")["frames"]["out"]
    c.wait("b", lambda s: s["frames"]["out"] > n + 2)
    status, jpg = c.call("GET", "/streams/b/frame.jpg")
    wide = av.open(__import__("io").BytesIO(jpg)).decode(video=0).__next__().to_ndarray(format="rgb24")
    assert wide.shape[1] == 2 * 256  # side by side: two panels
    # refusals, each an HTTP status and one line
    for body, code, text in [
        ({"name": "c", "source": "/etc/passwd"}, 403, "not allowed"),
        ({"name": "c", "source": str(SAMPLE)}, 403, "not allowed"),
        ({"name": "c", "source": SYN.format(fps=5), "record": "/tmp/x.mp4"}, 403, "record"),
        ({"name": "a", "source": SYN.format(fps=5)}, 409, "exists"),
        ({"name": "c/../x", "source": SYN.format(fps=5)}, 400, "stream name"),
        ({"name": "c", "source": SYN.format(fps=5), "view": "nope"}, 400, "view"),
        ({"name": "c", "source": SYN.format(fps=5), "loop": "yes"}, 400, "loop"),
        ({"name": "c"}, 400, "no source"),
    ]:
        status, reply = c.call("POST", "/api/streams", body)
        assert status == code and text in reply["error"] and "\n" not in reply["error"], (body, status, reply)
    status, reply = c.call("POST", "/api/streams", raw=b"{not json")
    assert status == 400 and "JSON" in reply["error"]
    status, reply = c.call("PATCH", "/api/streams/a", {"source": "/etc/passwd"})
    assert status == 400
    assert c.call("GET", "/api/streams/nope")[0] == 404 and c.call("DELETE", "/api/streams/nope")[0] == 404
    # restart: a fresh stream of the same spec; delete: gone, and its viewers' responses end
    status, body = c.call("POST", "/api/streams/a/restart")
    assert status == 200 and body["frames"]["out"] == 0
    c.wait("a", lambda s: s["frames"]["out"] >= 2)
    t0 = time.perf_counter()
    status, body = c.call("DELETE", "/api/streams/b")
    assert status == 200 and body["removed"] == "b" and time.perf_counter() - t0 < 10
    assert [s["name"] for s in c.get("/api/streams")["streams"]] == ["a"]
    assert c.call("GET", "/streams/b/mjpeg")[0] == 404


def test_mjpeg_sends_new_frames_to_every_viewer_without_more_inference(server):
    srv, c = server(["a=" + SYN.format(fps=10)])
    c.wait("a", lambda s: s["frames"]["out"] >= 2)

    def read_parts(n: int, out: list) -> None:
        with urllib.request.urlopen(c.url + "/streams/a/mjpeg", timeout=30) as r:
            assert "multipart/x-mixed-replace" in r.headers["Content-Type"]
            buf = b""
            while len(out) < n:
                buf += r.read1(65536)
                while b"\r\n\r\n" in buf:
                    head, rest = buf.split(b"\r\n\r\n", 1)
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        break
                    out.append(rest[:length])
                    buf = rest[length + 2:]

    before = srv.batcher.snapshot()["batches"]
    viewers = [[] for _ in range(5)]
    threads = [threading.Thread(target=read_parts, args=(6, v)) for v in viewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batches = srv.batcher.snapshot()["batches"] - before
    frames = c.stream("a")
    for v in viewers:
        assert len(v) == 6 and len(set(v)) == 6  # six different frames, each a JPEG
        assert all(p[:2] == b"\xff\xd8" for p in v)
    # five viewers cost no inference: batches ran at the source's pace (10 fps), not five times that
    assert batches <= frames["frames"]["in"] and batches < 6 * 5


def test_metrics_parse_and_agree_with_the_streams(server):
    srv, c = server(["a=synthetic:size=128x256,fps=20,frames=12", "b=synthetic:size=96x320,fps=20,frames=9",
                     "gone=" + str(REPO / "no-such-clip.mp4")])
    for name, n in (("a", 12), ("b", 9)):
        c.wait(name, lambda s, n=n: s["state"] == "ended" and s["frames"]["out"] + s["frames"]["dropped"] >= n)
    gone = c.wait("gone", lambda s: s["state"] == "failed")
    assert "no-such-clip.mp4" in gone["error"]  # its error is its own: the server and the others go on
    status, text = c.call("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    api = {s["name"]: s for s in c.get("/api/streams")["streams"]}

    def value(family: str, suffix: str = "", **labels) -> float:
        for s in families[family].samples:
            if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"no {family}{suffix} {labels}")

    for name in ("a", "b"):
        assert value("segformer3d_rt_frames", "_total", stream=name, stage="capture") == api[name]["frames"]["in"]
        assert value("segformer3d_rt_frames", "_total", stream=name, stage="output") == api[name]["frames"]["out"]
        dropped = sum(value("segformer3d_rt_frames_dropped", "_total", stream=name, stage=st)
                      for st in ("batcher", "render"))
        assert dropped == api[name]["frames"]["dropped"]
        assert value("segformer3d_rt_capture_to_output_seconds", "_count", stream=name) == api[name]["frames"]["out"]
        assert value("segformer3d_rt_stage_seconds", "_count", stream=name, stage="decode") == api[name]["frames"]["in"]
    assert value("segformer3d_rt_source_up", stream="gone") == 0.0
    # two streams of different sizes shared batches: the frames in batches are every frame inferred
    batch_frames = value("segformer3d_rt_batch_frames", "_sum")
    assert batch_frames == sum(api[n]["frames"]["out"] + api[n]["frames"]["dropped_by_stage"]["render"]
                               for n in ("a", "b"))
    # bounded labels: stream names and stages only, never a source
    for f in families.values():
        for s in f.samples:
            assert set(s.labels) <= {"stream", "stage", "le"}, s
            assert "synthetic" not in json.dumps(s.labels)
    per_stream = [s for f in families.values() for s in f.samples if s.labels.get("stream") == "a"]
    assert len(per_stream) == SERIES_PER_STREAM <= 30
    total = sum(len(f.samples) for f in families.values())
    assert total <= 60 + 30 * 3


def test_a_stalled_stream_never_slows_the_others(server):
    # a "camera" that accepts the connection and then says nothing
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/stream.mjpg"
    try:
        srv, c = server([f"{n}=" + SYN.format(fps=8) for n in ("a", "b", "c")] + [f"stalled={url}"],
                        max_batch=4)
        for n in ("a", "b", "c"):
            c.wait(n, lambda s: s["frames"]["out"] >= 3)
        start = {n: c.stream(n)["frames"]["out"] for n in ("a", "b", "c")}
        time.sleep(5.0)
        for n in ("a", "b", "c"):
            got = (c.stream(n)["frames"]["out"] - start[n]) / 5.0
            assert got >= 0.75 * 8, f"{n}: {got:.1f} fps beside a stalled stream"
        stalled = c.stream("stalled")
        assert stalled["frames"]["out"] == 0 and stalled["state"] in ("starting", "reconnecting")
    finally:
        silent.close()


def test_two_hundred_add_remove_cycles_leave_no_threads_or_files(server):
    srv, c = server([])

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    # one cycle first: what the server sets up once (the thread pool, pinned buffers) is not a leak
    c.call("POST", "/api/streams", {"name": "x", "source": SYN.format(fps=30)})
    c.call("DELETE", "/api/streams/x")
    time.sleep(0.5)
    threads0, fds0 = threading.active_count(), fds()
    t0 = time.perf_counter()
    for i in range(200):
        status, _ = c.call("POST", "/api/streams", {"name": f"s{i % 3}", "source": SYN.format(fps=30)})
        assert status == 201
        status, _ = c.call("DELETE", f"/api/streams/s{i % 3}")
        assert status == 200
    elapsed = time.perf_counter() - t0
    deadline = time.monotonic() + 10
    while threading.active_count() > threads0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() <= threads0, [t.name for t in threading.enumerate()]
    assert fds() <= fds0 + 2
    assert c.get("/api/streams")["streams"] == [] and elapsed < 200


def test_rtsp_stream_comes_back_after_its_server_restarts(server, shared_data, tmp_path):
    from test_rtsp import RtspServer, _server_missing, camera_frames

    why = _server_missing()
    if why:
        pytest.skip(why)
    camera_frames(shared_data / "videos" / "solidWhiteRight_960x540.mp4", tmp_path / "frames")  # a live camera
    rtsp = RtspServer(tmp_path / "frames", "--fps", "10", "--epoch", f"{time.time():.3f}")
    rtsp.start()
    try:
        srv, c = server([f"cam={rtsp.url}"], timeout_s=3.0)
        c.wait("cam", lambda s: s["frames"]["out"] >= 5, timeout=60)
        rtsp.kill()
        c.wait("cam", lambda s: s["state"] == "reconnecting", timeout=60)
        rtsp.start()
        n = c.stream("cam")["frames"]["out"]
        back = c.wait("cam", lambda s: s["state"] == "running" and s["frames"]["out"] > n + 5, timeout=90)
        assert back["reconnects"] >= 1 and back["error"] is None
    finally:
        rtsp.kill()


def test_token_guards_everything_but_health(server):
    srv, c = server(["a=" + SYN.format(fps=10)], token="s3cret")
    anon = Client(srv.url)
    assert anon.call("GET", "/healthz")[0] == 200
    for path in ("/api/streams", "/metrics", "/", "/view/a", "/streams/a/mjpeg", "/readyz"):
        status, body = anon.call("GET", path)
        assert status == 401 and "token" in body["error"], path
    assert anon.call("GET", "/api/streams", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert c.call("GET", "/api/streams")[0] == 200
    status, page = anon.call("GET", "/view/a?token=s3cret")
    assert status == 200 and b"<video" in page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_stops_every_stream_and_finalises_recordings(tmp_path):
    port = _free_port()
    rec = tmp_path / "rec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segformer3d_rt", "serve", f"demo={SAMPLE}", "live=" + SYN.format(fps=10),
         "--loop", "--record-dir", str(rec), "--input-size", "128x256", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        c = Client(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                streams = c.get("/api/streams")["streams"]
                if len(streams) == 2 and all(s["frames"]["out"] >= 10 for s in streams):
                    break
            except (urllib.error.URLError, ConnectionError, AssertionError):
                pass
            assert time.monotonic() < deadline
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert sorted(p.name for p in rec.iterdir()) == ["demo.mp4", "live.mp4"], err  # no .partial left behind
    for name in ("demo.mp4", "live.mp4"):
        with av.open(str(rec / name)) as f:
            assert sum(1 for _ in f.decode(video=0)) >= 10


def test_bad_settings_are_one_line(tmp_path):
    for args, text in [
        (["serve", "a=synthetic:", "--host", "0.0.0.0"], "--token"),
        (["serve", "a"], "NAME=SOURCE"),
        (["serve", "--max-batch", "0"], "--max-batch"),
        (["serve", "--config", str(tmp_path / "none.toml")], "not found"),
    ]:
        r = subprocess.run([sys.executable, "-m", "segformer3d_rt", *args], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "SEGFORMER3D_RT_TOKEN": ""})
        assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "serve", "a=synthetic:", "--port",
                            str(busy.getsockname()[1])], capture_output=True, text=True, timeout=120)
    finally:
        busy.close()
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_a_looped_source_starts_again_with_increasing_timestamps():
    from segformer3d_rt.pipeline.sources import open_source
    from segformer3d_rt.pipeline.sources.loop import Looped

    src = Looped(lambda: open_source("synthetic:size=64x128,fps=10,frames=5"))
    got = []
    for frame in src.frames():
        got.append(frame)
        if len(got) == 12:
            src.close()
    assert [f.index for f in got] == list(range(12)) and src.passes == 2
    pts = [f.pts for f in got]
    raw = [f.pts_raw for f in got]
    assert np.allclose(np.diff(pts), 0.1) and (np.diff(raw) > 0).all()
    assert src.frame_count is None and "looped" in src.description


def test_stamp_survives_jpeg():
    import cv2

    from segformer3d_rt.serve import stamp

    rng = np.random.default_rng(2)
    for ms in (0, 1, 0xFFFFFFFF, stamp.wall_ms(time.perf_counter()), 123456789):
        img = rng.integers(0, 255, (128, 256, 3), dtype=np.uint8)
        stamp.paint(img, ms)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
        assert stamp.read(cv2.imdecode(buf, cv2.IMREAD_COLOR)) == ms
    assert stamp.read(np.zeros((128, 200, 3), np.uint8)) is None  # too narrow: not stamped
    assert abs(stamp.wall_ms(time.perf_counter()) - (int(time.time() * 1000) & 0xFFFFFFFF)) < 50
