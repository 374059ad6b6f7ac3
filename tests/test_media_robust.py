"""Media that used to cost finished work or go wrong quietly: audio a container cannot hold, encoder settings that
only failed after the last frame, damage mid-file, rotation metadata, FIFOs, and a write that fails part-way.
Every clip is made here with PyAV (no ffmpeg CLI needed); the damaged one is cut from a shared dashcam clip."""
from __future__ import annotations

import glob
import json
import logging
import os
import subprocess
import sys
import threading
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from segformer3d_rt import cli
from segformer3d_rt.errors import SinkError, SourceError
from segformer3d_rt.pipeline.config import RunConfig
from segformer3d_rt.pipeline.session import open_sinks
from segformer3d_rt.pipeline.frames import Frame
from segformer3d_rt.pipeline.sinks import Mp4Sink, choose_encoder
from segformer3d_rt.pipeline.sinks import audio as audio_module
from segformer3d_rt.pipeline.sources import open_source
from segformer3d_rt.pipeline.sources.orientation import Orientation
from segformer3d_rt.pipeline.stats import PipelineStats

SHORT = "videos/test_video_1280x720.mp4"  # in the shared data: 38 frames, 25 fps
FAST = {"preset": "ultrafast"}
RATE, SAMPLES = 25, 48000


@pytest.fixture
def short_clip(shared_data: Path) -> Path:
    path = shared_data / SHORT
    if not path.is_file():
        pytest.skip(f"shared test clip {path} not found")
    return path


# -- media made here ------------------------------------------------------------------------------------------
def _tone(n_samples: int, layout: str = "stereo") -> np.ndarray:
    t = np.arange(n_samples) / SAMPLES
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    channels = 1 if layout == "mono" else 2
    return np.repeat(wave[None], channels, axis=0)  # planar layout, converted below


def craft(path: Path, container: str, video: str, audio: str | None, *, n: int = 20, size=(160, 120),
          pix_fmt: str = "yuv420p") -> Path:
    """``n`` frames of a moving gradient (+ a 440 Hz tone) in ``container`` with the given codecs."""
    w, h = size
    with av.open(str(path), "w", format=container) as out:
        v = out.add_stream(video, rate=RATE)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        a = None
        if audio is not None:
            a = out.add_stream(audio, rate=SAMPLES)
            a.layout = "stereo"
        xx = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
        for i in range(n):
            img = np.broadcast_to(xx, (h, w, 3)).copy()
            img[:, :, 1] = (10 * i) % 256
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            f.pts, f.time_base = i, Fraction(1, RATE)
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        if a is not None:
            fmt = a.codec_context.codec.audio_formats[0].name
            chunk = a.codec_context.frame_size or 1024
            total = n * SAMPLES // RATE
            for start in range(0, total, chunk):
                planar = _tone(min(chunk, total - start))
                af = av.AudioFrame.from_ndarray(planar, format="s16p", layout="stereo")
                af.sample_rate, af.pts, af.time_base = SAMPLES, start, Fraction(1, SAMPLES)
                if fmt != "s16p":
                    af = av.AudioResampler(format=fmt, layout="stereo", rate=SAMPLES).resample(af)[0]
                    af.pts, af.time_base = start, Fraction(1, SAMPLES)
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def transcode_clip(source: Path, out: Path, **kwargs) -> Mp4Sink:
    """The pipeline's file path without the network: every decoded frame straight into the sink."""
    with open_source(str(source)) as src:
        sink = Mp4Sink(out, fps=src.fps, time_base=src.time_base, audio_from=source, **{**FAST, **kwargs})
        with sink:
            for f in src.frames():
                sink.write(f, f.image)
    return sink


class Probe:
    def __init__(self, path: Path) -> None:
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            self.size = (v.width, v.height)
            self.frames = [f for f in c.decode(v)]
            self.images = [f.to_ndarray(format="rgb24") for f in self.frames]
            self.video_end = float((self.frames[-1].pts + self.frames[-1].duration) * self.frames[-1].time_base)
        with av.open(str(path)) as c:
            self.audio_codec = c.streams.audio[0].codec_context.name if c.streams.audio else None
            self.audio_end = None
            if c.streams.audio:
                packets = [p for p in c.demux(c.streams.audio[0]) if p.size]
                last = packets[-1]
                self.audio_end = float((last.pts + last.duration) * last.time_base)
                self.audio_samples = sum(f.samples for f in c.decode(audio=0))


def _no_leftovers(path: Path) -> None:
    """Nothing under the name, no partial file of any run (NAME.<pid>-<random>.partial)."""
    assert not path.exists()
    assert not list(path.parent.glob(f"{glob.escape(path.name)}*.partial")), list(path.parent.iterdir())


# -- 2. audio the container cannot hold ----------------------------------------------------------------------
def test_mjpeg_pcm_avi_to_mp4_transcodes_the_audio_and_keeps_every_frame(tmp_path, caplog):
    src = craft(tmp_path / "cam.avi", "avi", "mjpeg", "pcm_s16le", pix_fmt="yuvj420p")
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO):
        sink = transcode_clip(src, out)
    assert sink.audio_mode == "transcode"
    got = Probe(out)
    assert len(got.frames) == 20 and got.size == (160, 120)
    assert got.audio_codec == "aac"
    assert abs(got.audio_end - got.video_end) < 0.05  # the whole tone, cut to the video
    lines = [r.getMessage() for r in caplog.records if "audio of 'cam.avi'" in r.getMessage()]
    assert len(lines) == 1 and "pcm_s16le cannot be copied into out.mp4" in lines[0] and "AAC" in lines[0]
    _no_leftovers(out.with_name("out.mp4.partial"))
    assert not list(tmp_path.glob("out.mp4*.partial"))


def test_opus_webm_to_mov_transcodes_and_to_mkv_copies(tmp_path):
    src = craft(tmp_path / "talk.webm", "webm", "libvpx-vp9", "libopus")
    mov = tmp_path / "out.mov"
    assert transcode_clip(src, mov).audio_mode == "transcode"  # mov refuses Opus ("only supported in MP4")
    got = Probe(mov)
    assert len(got.frames) == 20 and got.audio_codec == "aac" and abs(got.audio_end - got.video_end) < 0.05
    mkv = tmp_path / "out.mkv"
    assert transcode_clip(src, mkv).audio_mode == "copy"
    assert Probe(mkv).audio_codec == "opus"


def test_audio_that_fits_nowhere_is_dropped_with_one_warning(tmp_path, caplog, monkeypatch):
    # the fallback encoder swapped for one mov refuses too: both real trials fail, the video is still written
    monkeypatch.setattr(audio_module, "TRANSCODE_CODEC", "libopus")
    src = craft(tmp_path / "talk.webm", "webm", "libvpx-vp9", "libopus")
    out = tmp_path / "out.mov"
    with caplog.at_level(logging.INFO):
        sink = transcode_clip(src, out)
    assert sink.audio_mode is None
    got = Probe(out)
    assert len(got.frames) == 20 and got.audio_codec is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "left out of out.mov" in warnings[0] and "opus" in warnings[0]


def test_pcm_avi_through_the_whole_run_keeps_every_frame_and_the_audio(tmp_path):
    src = craft(tmp_path / "cam.avi", "avi", "mjpeg", "pcm_s16le", pix_fmt="yuvj420p")
    out = tmp_path / "out.mp4"
    stats = tmp_path / "s.json"
    code = cli.main(["run", str(src), "-o", str(out), "--device", "cpu", "--input-size", "64x96",
                     "--progress", "none", "--preset", "ultrafast", "--stats-json", str(stats)])
    assert code == 0
    report = json.loads(stats.read_text())
    assert report["frames"]["out"] == 20 and report["error"] is None
    got = Probe(out)
    assert len(got.frames) == 20 and got.audio_codec == "aac"


# -- 2. encoder settings, settled before the first frame ------------------------------------------------------
def _one_error_line(capsys, argv: list[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_nvenc_without_a_gpu_is_one_line_before_any_frame(tmp_path, capsys):
    if choose_encoder("auto", prefer_hardware=True)[0] == "h264_nvenc":
        pytest.skip("NVENC opens on this machine")
    src = craft(tmp_path / "c.mp4", "mp4", "libx264", None)
    out = tmp_path / "out.mp4"
    stats = tmp_path / "s.json"
    line = _one_error_line(capsys, ["run", str(src), "-o", str(out), "--codec", "h264_nvenc", "--device", "cpu",
                                    "--progress", "none", "--stats-json", str(stats)])
    assert "video codec 'h264_nvenc' does not open on this machine" in line
    assert "Invalid argument" not in line and "--codec libx264" in line
    _no_leftovers(out)
    if stats.exists():  # a setup failure's report: nothing was decoded
        report = json.loads(stats.read_text())
        assert report.get("frames", {}).get("in", 0) == 0 and "h264_nvenc" in report["error"]


def test_bad_presets_name_the_choices_before_any_frame(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(SinkError, match=r"libx264 has no preset 'fastest' \(use one of ultrafast, .*placebo\)"):
        Mp4Sink(out, fps=25.0, preset="fastest")
    with pytest.raises(SinkError, match="preset 'fastest' means nothing to NVENC"):
        Mp4Sink(out, fps=25.0, codec="h264_nvenc", preset="fastest")
    _no_leftovers(out)


def test_string_crf_from_a_preset_toml_is_one_line(tmp_path, capsys):
    src = craft(tmp_path / "c.mp4", "mp4", "libx264", None)
    preset = tmp_path / "p.toml"
    preset.write_text('crf = "23"\n')
    out = tmp_path / "out.mp4"
    line = _one_error_line(capsys, ["run", str(src), "-o", str(out), "--pipeline", str(preset), "--device", "cpu",
                                    "--progress", "none"])
    assert "crf" in line and "23" in line
    _no_leftovers(out)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"crf": "23"}, r"crf must be a whole number from 0 to 51, not '23' \(a string; in a \.toml preset"),
    ({"crf": 70}, "crf 70 is out of range for libx264"),
    ({"crf": True}, "crf must be a whole number"),
    ({"bitrate": "0"}, "must be above 0"),
    ({"bitrate": "fast"}, "bad bitrate 'fast'"),
    ({"options": {"nosuchopt": "1"}}, r"video codec 'libx264' has no option\(s\) nosuchopt"),
    ({"options": {"tune": "bogus"}}, "video codec 'libx264' refuses option tune=bogus"),
])
def test_sink_settings_fail_at_construction_naming_the_option(tmp_path, kwargs, message):
    out = tmp_path / "out.mp4"
    with pytest.raises(SinkError, match=message) as info:
        Mp4Sink(out, fps=25.0, **{**FAST, **kwargs})
    assert "\n" not in str(info.value)
    _no_leftovers(out)


def test_integer_bitrate_from_a_preset_is_accepted(tmp_path):
    out = tmp_path / "out.mp4"
    frames = [Frame(index=i, image=np.full((48, 64, 3), 20 * i, np.uint8), pts=i / 25, t_capture=0.0)
              for i in range(3)]
    with Mp4Sink(out, fps=25.0, bitrate=400_000, **FAST) as sink:
        for f in frames:
            sink.write(f, f.image)
    assert len(Probe(out).frames) == 3


# -- 2. a write that fails part-way keeps what was written ----------------------------------------------------
_FILL_DISK = r"""
import resource, signal, sys
import numpy as np
from segformer3d_rt.errors import SinkError
from segformer3d_rt.pipeline.frames import Frame
from segformer3d_rt.pipeline.sinks import Mp4Sink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
sink = Mp4Sink(sys.argv[1], fps=25.0, preset="ultrafast")
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))
rng = np.random.default_rng(0)
try:
    for i in range(400):
        img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)  # noise: big frames, the limit comes soon
        sink.write(Frame(index=i, image=img, pts=i / 25, t_capture=0.0), img)
except SinkError as e:
    print("failed:", e)
sink.close()
print("kept:", sink.kept_path)
"""


def test_a_late_write_failure_keeps_the_file_under_a_new_name(tmp_path):
    out = tmp_path / "out.mkv"
    older = tmp_path / "out.incomplete.mkv"
    older.write_bytes(b"an earlier run's file")  # never written over
    proc = subprocess.run([sys.executable, "-c", _FILL_DISK, str(out)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    kept = tmp_path / "out.incomplete-2.mkv"
    assert "failed: cannot write" in proc.stdout and "File too large" in proc.stdout
    assert f"kept: {kept}" in proc.stdout
    assert f"is kept in '{kept}'" in proc.stderr  # the warning line names it
    assert older.read_bytes() == b"an earlier run's file"
    _no_leftovers(out)
    with av.open(str(kept)) as c:  # what was written plays
        assert sum(1 for _ in c.decode(video=0)) > 5


# -- 3. damage mid-file: skipped, counted, located -------------------------------------------------------------
def _damaged(tmp_path: Path, clip: Path) -> Path:
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 60_000] = bytes((i * 37) % 256 for i in range(60_000))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    return bad


def _ffmpeg_count(path: Path) -> int:
    """What FFmpeg decodes: every frame, a packet the decoder refuses skipped (ffmpeg's default)."""
    n = 0
    with av.open(str(path)) as c:
        for packet in c.demux(video=0):
            try:
                n += len(packet.decode())
            except av.FFmpegError:
                pass
    return n


def test_damaged_clip_decodes_what_ffmpeg_decodes_and_says_where(tmp_path, caplog, short_clip):
    bad = _damaged(tmp_path, short_clip)
    reference = _ffmpeg_count(bad)
    assert 30 <= reference < 38
    stats = PipelineStats()
    with caplog.at_level(logging.WARNING), open_source(str(bad)) as source:
        source.on_damage = stats.damaged
        frames = list(source.frames())  # no SourceError: the file goes on after the damage
    assert abs(len(frames) - reference) <= 1
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and pts[-1] == pytest.approx(37 / 25)  # the end of the clip is reached
    damage = stats.snapshot()["damage"]
    assert damage["packets_lost"] >= 1 and damage["spans_total"] == 1
    (span,) = damage["spans"]
    gap = max(b - a for a, b in zip(pts, pts[1:]))  # the hole in the decoded timestamps
    assert span["to_s"] - span["from_s"] == pytest.approx(gap - 1 / 25, abs=1e-6)
    lines = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(lines) == 1
    assert f"between {span['from_s']:.2f} s and {span['to_s']:.2f} s" in lines[0] and "'bad.mp4'" in lines[0]


def test_damaged_clip_through_the_whole_run_reports_the_loss(tmp_path, short_clip):
    bad = _damaged(tmp_path, short_clip)
    out, stats = tmp_path / "out.mp4", tmp_path / "s.json"
    code = cli.main(["run", str(bad), "-o", str(out), "--device", "cpu", "--input-size", "64x96",
                     "--progress", "none", "--preset", "ultrafast", "--stats-json", str(stats)])
    assert code == 0
    report = json.loads(stats.read_text())
    assert report["frames"]["out"] == len(Probe(out).frames) >= 30
    assert report["damage"]["packets_lost"] >= 1 and report["damage"]["spans"][0]["from_s"] > 0


def test_a_clip_that_never_decodes_is_still_an_error(tmp_path, short_clip):
    data = bytearray(short_clip.read_bytes())
    # every sample overwritten, the index (moov: at the start of this file) left: packets, none decodable
    mdat = data.find(b"mdat") + 4
    assert 0 < data.find(b"moov") < mdat
    data[mdat:] = bytes((i * 37) % 256 for i in range(len(data) - mdat))
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(bytes(data))
    with open_source(str(bad)) as source, pytest.raises(SourceError, match="could be decoded"):
        list(source.frames())


# -- 4. rotation metadata ------------------------------------------------------------------------------------
UPRIGHT_W, UPRIGHT_H = 96, 160  # a phone held upright


def _upright() -> np.ndarray:
    img = np.full((UPRIGHT_H, UPRIGHT_W, 3), 60, np.uint8)
    img[:32, :32] = (255, 0, 0)  # red marker: top left
    img[-24:, -24:] = (0, 0, 255)  # blue marker: bottom right
    img[:24, -24:] = (0, 255, 0)  # green: top right (tells a mirror from a turn)
    return img


def _rotated_clip(path: Path, degrees: int, hflip: bool = False, n: int = 4) -> Path:
    """Coded so that a player (display matrix applied) shows ``_upright()``: PyAV's rotation is anticlockwise,
    the mirror applied after it."""
    shown = _upright()
    coded = shown[:, ::-1] if hflip else shown
    coded = np.ascontiguousarray(np.rot90(coded, k=-degrees // 90))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=RATE)
        s.height, s.width = coded.shape[:2]
        s.pix_fmt = "yuv444p"  # sharp marker edges
        s.set_display_rotation(degrees, hflip=hflip)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(coded, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, RATE)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def _markers_upright(img: np.ndarray) -> None:
    assert img.shape == (UPRIGHT_H, UPRIGHT_W, 3)
    assert np.abs(img[8, 8].astype(int) - (255, 0, 0)).max() < 40  # red top left
    assert np.abs(img[-8, -8].astype(int) - (0, 0, 255)).max() < 40  # blue bottom right
    assert np.abs(img[8, -8].astype(int) - (0, 255, 0)).max() < 40  # green top right


@pytest.mark.parametrize(("degrees", "hflip"), [(90, False), (-90, False), (180, False), (90, True), (0, True)])
def test_rotated_clip_goes_in_and_comes_out_upright(tmp_path, degrees, hflip):
    clip = _rotated_clip(tmp_path / "phone.mp4", degrees, hflip)
    if not hflip:  # OpenCV's FFmpeg backend applies the rotation too (not mirrors): an independent reference
        ok, bgr = cv2.VideoCapture(str(clip)).read()
        assert ok
        _markers_upright(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    with open_source(str(clip)) as source:
        frames = list(source.frames())
        assert (source.width, source.height) == (UPRIGHT_W, UPRIGHT_H)
        assert "upright" in source.description
    assert len(frames) == 4
    for f in frames:
        _markers_upright(f.image)
    out = tmp_path / "out.mp4"
    with Mp4Sink(out, fps=source.fps, time_base=source.time_base, **FAST) as sink:
        for f in frames:
            sink.write(f, f.image)
    got = Probe(out)
    assert got.size == (UPRIGHT_W, UPRIGHT_H)  # dimensions swapped for a quarter turn
    for frame, img in zip(got.frames, got.images):
        assert frame.rotation == 0 and not any("DISPLAYMATRIX" in str(sd.type) for sd in frame.side_data)
        _markers_upright(img)
    assert [float(f.pts * f.time_base) for f in got.frames] == [i / RATE for i in range(4)]


def test_orientation_ignores_the_identity_and_odd_angles():
    assert Orientation.from_matrix((65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)) is None
    c, s = int(65536 * np.cos(0.5)), int(65536 * np.sin(0.5))  # not a quarter turn: left as decoded
    assert Orientation.from_matrix((c, -s, 0, s, c, 0, 0, 0, 1 << 30)) is None


# -- FIFO: opened exactly once ---------------------------------------------------------------------------------
def _mkv_copy(src: Path, dst: Path) -> Path:
    """Every stream of ``src`` remuxed into Matroska, which FFmpeg reads without seeking."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="matroska") as o:
        outs = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.dts is not None:
                packet.stream = outs[packet.stream.index]
                o.mux(packet)
    return dst


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_source_is_opened_once_and_read_to_the_end(tmp_path, caplog):
    data = _mkv_copy(craft(tmp_path / "c.mp4", "mp4", "libx264", "aac", n=30), tmp_path / "c.mkv").read_bytes()
    fifo = tmp_path / "feed.mkv"
    os.mkfifo(fifo)
    writes: list[int] = []

    def writer() -> None:
        with open(fifo, "wb") as f:  # blocks until the reader opens; a second reader would wait forever
            writes.append(1)
            f.write(data)

    result: dict = {}

    def reader() -> None:
        try:
            with open_source(str(fifo)) as source:
                result["reopenable"] = source.reopenable
                result["count"] = source.frame_count
                result["frames"] = [f.index for f in source.frames()]
                try:
                    list(source.frames())
                except SourceError as e:
                    result["again"] = str(e)
                cfg = RunConfig(source=str(fifo), outputs=[str(tmp_path / "o.mp4")], preset="ultrafast")
                with caplog.at_level(logging.WARNING), ExitStack() as stack:
                    sinks, _, _, _ = open_sinks(cfg, source, stack)
                    result["audio"] = sinks[0].audio_mode
        except Exception as e:  # reported below
            result["error"] = e

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=reader, daemon=True)]
    for t in threads:
        t.start()
    threads[1].join(60)
    if threads[1].is_alive():  # a second open is waiting for a writer: give it EOF, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        threads[1].join(10)
        pytest.fail("the FIFO was opened a second time (the reader hung)")
    threads[0].join(10)
    assert "error" not in result, result.get("error")
    assert writes == [1]
    assert result["reopenable"] is False and result["count"] is None  # not counted: that is a second read
    assert result["frames"] == list(range(30))
    assert "a FIFO can be read only once" in result["again"]
    assert result["audio"] is None
    assert any("FIFO can be read only once" in r.getMessage() for r in caplog.records)


def test_regular_files_are_still_counted_and_reopenable(tmp_path):
    clip = _mkv_copy(craft(tmp_path / "c.mp4", "mp4", "libx264", None, n=12), tmp_path / "c.mkv")
    with open_source(str(clip)) as source:
        assert source.reopenable and source.frame_count == 12
        assert len(list(source.frames())) == 12
        assert len(list(source.frames())) == 12  # a second pass reopens the file

