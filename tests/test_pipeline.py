"""The whole `run` pipeline on real dashcam clips (CPU): every frame, same timing, audio, stats, errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers import interrupt
from segformer3d_rt import build_model, save_checkpoint

FAST = ["--input-size", "128x256", "--preset", "ultrafast", "--progress", "none"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_model("b0"), tmp_path_factory.mktemp("weights") / "b0.safetensors")


@pytest.fixture(scope="module")
def clip(shared_data) -> Path:
    return shared_data / "videos" / "test_video_1280x720.mp4"  # 38 frames, 25 fps, AAC audio


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", *args], capture_output=True, text=True,
                          timeout=timeout)


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(v):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(float(f.pts * f.time_base))
        audio = c.streams.audio[0] if c.streams.audio else None
        info = {"frames": frames, "pts": pts, "rate": float(v.average_rate), "size": (v.height, v.width),
                "audio_codec": audio.codec_context.name if audio else None}
    if audio is not None:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            end = 0.0
            for pkt in c.demux(a):
                if pkt.pts is not None and pkt.duration:
                    end = max(end, float((pkt.pts + pkt.duration) * pkt.time_base))
            info["audio_end"] = end
    return info


def test_file_to_mp4_every_frame_in_order_same_timing_with_audio(weights, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    stats = tmp_path / "stats.json"
    # alpha 0, no legend, no HUD: the output frame is the source frame, so order and content can be checked
    r = run_cli(str(clip), "-o", str(out), "--weights", str(weights), "--alpha", "0", "--no-legend", "--no-hud",
                "--crf", "18", "--stats-json", str(stats), *FAST)
    assert r.returncode == 0, r.stderr
    src, dst = probe(clip), probe(out)
    assert len(dst["frames"]) == len(src["frames"]) == 38
    assert dst["rate"] == pytest.approx(25.0)
    assert dst["size"] == src["size"]
    np.testing.assert_allclose(dst["pts"], src["pts"], atol=1e-3)
    for i in (0, 17, 37):  # frame i of the output is frame i of the source, not a neighbour
        own = np.abs(dst["frames"][i].astype(int) - src["frames"][i].astype(int)).mean()
        other = np.abs(dst["frames"][i].astype(int) - src["frames"][(i + 10) % 38].astype(int)).mean()
        assert own < 4.0 and own < other / 2
    assert dst["audio_codec"] == "aac"
    assert abs(dst["audio_end"] - src["audio_end"]) < 0.1
    s = json.loads(stats.read_text())
    assert s["frames"]["in"] == s["frames"]["out"] == 38 and s["frames"]["dropped"] == 0
    assert s["error"] is None and s["interrupted"] is False


def test_stats_json_has_documented_fields(weights, clip, tmp_path):
    stats = tmp_path / "s.json"
    r = run_cli(str(clip), "--weights", str(weights), "--max-frames", "12", "--stats-json", str(stats), *FAST)
    assert r.returncode == 0, r.stderr
    s = json.loads(stats.read_text())
    assert s["frames"]["in"] == s["frames"]["out"] == 12
    for key in ("version", "source", "model", "outputs", "frames", "reconnects", "elapsed_s", "throughput_fps",
                "realtime_factor", "latency_ms", "interrupted", "error", "config"):
        assert key in s, key
    lat = s["latency_ms"]
    for stage in ("decode", "preprocess", "inference", "render", "sink"):
        assert set(lat["stages"][stage]) >= {"p50", "p95", "p99", "max", "count"}
        assert lat["stages"][stage]["count"] == 12
    e2e = lat["capture_to_output"]
    assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"] <= e2e["max"]
    assert s["throughput_fps"] > 0 and s["realtime_factor"] == pytest.approx(s["throughput_fps"] / 25.0)
    assert s["source"]["fps"] == pytest.approx(25.0) and s["source"]["live"] is False


def test_image_folder_to_folder(weights, shared_data, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    src = shared_data / "cityscapes_samples"
    (photos / "b.png").write_bytes((src / "frankfurt_000000_000294_leftImg8bit.png").read_bytes())
    (photos / "a.png").write_bytes((src / "mmseg_demo_cityscapes_1024x512.png").read_bytes())
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    r = run_cli(str(photos), "-o", str(out), "--weights", str(weights), "--view", "grid", *FAST)
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2 and all(n.startswith(("a", "b")) for n in written)
    import cv2
    a = cv2.imread(str(out / written[0]))
    assert a.shape[:2] == (1024, 2048)  # grid: 2H x 2W of the 1024x512 image
    assert "notes.txt" in r.stderr  # skipped with a warning


def test_sigint_leaves_a_playable_mp4(weights, shared_data, tmp_path):
    clip = shared_data / "videos" / "project_video_short_1280x720.mp4"  # 170 frames
    out = tmp_path / "partial.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "segformer3d_rt", "run", str(clip), "-o", str(out),
                             "--weights", str(weights), "--input-size", "256x512", "--preset", "ultrafast",
                             "--progress", "plain", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err, _ = interrupt(proc, out, signal.SIGINT, settle_s=2.0)  # some frames through
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    info = probe(out)
    assert 0 < len(info["frames"]) < 170
    assert info["audio_end"] <= info["pts"][-1] + 0.04 + 0.15  # audio cut at the last frame
    assert not list(tmp_path.glob("*.partial*"))


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


def test_bad_inputs_each_give_one_line_and_code_2(weights, clip, tmp_path):
    w = ["--weights", str(weights), *FAST]
    _assert_one_line_error(run_cli(str(tmp_path / "missing.mp4"), *w), "missing.mp4")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 100)
    _assert_one_line_error(run_cli(str(text), *w), "text.mp4")
    _assert_one_line_error(run_cli("7", *w), "camera 7")
    _assert_one_line_error(run_cli("http://127.0.0.1:9/stream.mp4", "--timeout", "1", *w), "127.0.0.1:9")
    _assert_one_line_error(run_cli(str(clip), "-o", "/proc/forbidden/x.mp4", *w), "x.mp4")
    _assert_one_line_error(run_cli(str(clip), "-o", str(tmp_path / "x.mp4"), "--codec", "nope264", *w), "nope264")
    assert not (tmp_path / "x.mp4").exists()
    _assert_one_line_error(run_cli(str(clip), "--weights", str(tmp_path / "none.safetensors")), "none.safetensors")


def test_truncated_video_processes_what_decodes_then_reports(weights, shared_data, tmp_path):
    src = shared_data / "videos" / "solidWhiteRight_960x540.mp4"
    cut = tmp_path / "cut.mp4"
    data = src.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.5)])
    out = tmp_path / "o.mp4"
    stats = tmp_path / "s.json"
    r = run_cli(str(cut), "-o", str(out), "--weights", str(weights), "--stats-json", str(stats), *FAST)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads(stats.read_text())
    assert 0 < s["frames"]["out"] < 221 and s["frames"]["in"] == s["frames"]["out"]
    assert s["error"]
    assert len(probe(out)["frames"]) == s["frames"]["out"]  # what decoded was processed and written


def test_live_source_drops_frames_and_latency_stays_bounded(weights):
    """A model slower than the camera: the newest frame wins, drops are counted, no lag builds up."""
    from segformer3d_rt.model import load_model
    from segformer3d_rt.pipeline.infer import InferenceEngine
    from segformer3d_rt.pipeline.preprocess import Preprocessor
    from segformer3d_rt.pipeline.runner import Pipeline, PipelineParts
    from segformer3d_rt.pipeline.sources import open_source
    from segformer3d_rt.runtime.backends import torch_network

    class SlowEngine(InferenceEngine):
        def run(self, batch, size=None):
            time.sleep(0.2)  # 5 FPS against a 25 FPS camera
            return super().run(batch, size)

    model = load_model(weights)
    engine = SlowEngine(torch_network(model, torch.device("cpu"), "fp32"))
    with open_source("synthetic:seed=1,size=128x256,fps=25,frames=100", live=True) as source:
        assert source.live
        parts = PipelineParts(source=source, preprocess=Preprocessor((128, 256)), engine=engine,
                              render=lambda p, hud: p.frame.image, sinks=[], live=True, batch_size=1,
                              queue_size=8)
        pipe = Pipeline(parts)
        pipe.start()
        while pipe.alive():
            time.sleep(0.05)
        pipe.join()
    snap = pipe.stats.snapshot()
    assert not pipe.errors
    assert snap["frames"]["in"] == 100
    assert snap["frames"]["dropped"] > 50  # most frames are skipped, and counted
    assert snap["frames"]["out"] + snap["frames"]["dropped"] == snap["frames"]["in"]
    lat = np.array(pipe.stats.recent_latencies())
    assert len(lat) == snap["frames"]["out"]  # the recent window (120) holds every output of this short run
    # bounded: never more than a few inference times, and no growth from the first to the last outputs
    assert lat.max() < 1.0
    assert snap["latency_ms"]["capture_to_output"]["max"] < 1000.0
    assert lat[-5:].mean() < lat[:5].mean() + 0.25


@pytest.mark.skipif(os.environ.get("DISPLAY") is not None, reason="checks the no-display message")
def test_show_without_display_says_so_and_continues(weights, clip, tmp_path):
    r = run_cli(str(clip), "--show", "--max-frames", "3", "--weights", str(weights), *FAST)
    assert r.returncode == 0, r.stderr
    assert "display" in r.stderr.lower() or "gui" in r.stderr.lower()
    assert "Traceback" not in r.stderr
