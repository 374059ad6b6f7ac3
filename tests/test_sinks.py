"""Output sinks: real encodes of the shared dashcam clips, read back with PyAV."""
from __future__ import annotations

import glob
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from segformer3d_rt.errors import SinkError
from segformer3d_rt.pipeline.frames import Frame
from segformer3d_rt.pipeline.sinks import DisplaySink, ImageDirSink, Mp4Sink, NullSink, display_available
from segformer3d_rt.pipeline.sinks import display as display_module
from conftest import SHARED_DATA

VIDEOS = SHARED_DATA / "videos"
SHORT = VIDEOS / "test_video_1280x720.mp4"  # 38 frames, time base 1/25, starts at 0
LATE_START = VIDEOS / "project_video_short_1280x720.mp4"  # time base 1/12800, video starts at 0.2 s, audio 0.013 s
FAST = {"preset": "ultrafast"}


def _clip(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared test clip {path} is missing (see shared/data/SOURCES.md)")
    return path


def _decode(path: Path, limit: int | None = None) -> list[Frame]:
    """Frames as the pipeline's video source makes them: RGB, container pts and time base."""
    frames: list[Frame] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for f in c.decode(stream):
            tb = f.time_base or stream.time_base
            frames.append(Frame(index=len(frames), image=f.to_ndarray(format="rgb24"), pts=float(f.pts * tb),
                                t_capture=time.perf_counter(), pts_raw=int(f.pts), time_base=tb))
            if limit is not None and len(frames) >= limit:
                break
    return frames


def _synthetic(n: int, width: int, height: int, *, time_base: Fraction | None = None, start: int = 0,
               step: int = 1) -> list[Frame]:
    """A moving colour pattern (smooth, so the encoder keeps it well)."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        image = np.stack([(xx * 255 // max(1, width - 1) + 4 * i) % 256, yy * 255 // max(1, height - 1),
                          np.full_like(xx, (40 * i) % 256)], axis=-1).astype(np.uint8)
        pts_raw = start + i * step if time_base is not None else None
        pts = float(pts_raw * time_base) if time_base is not None else None
        frames.append(Frame(index=i, image=image, pts=pts, t_capture=0.0, pts_raw=pts_raw, time_base=time_base))
    return frames


def _write(path: Path, frames: list[Frame], **kwargs) -> Mp4Sink:
    kwargs.setdefault("fps", 25.0)
    kwargs.setdefault("preset", "ultrafast")
    with Mp4Sink(path, **kwargs) as sink:
        for f in frames:
            sink.write(f, f.image)
    return sink


class Probe:
    """What a player sees in a written file."""

    def __init__(self, path: Path) -> None:
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            self.avg_rate = v.average_rate
            self.size = (v.width, v.height)
            self.video_codec = v.codec_context.name
            self.pts: list[float] = []
            self.images: list[np.ndarray] = []
            last_duration = 0.0
            for f in c.decode(v):
                self.pts.append(float(f.pts * f.time_base))
                self.images.append(f.to_ndarray(format="rgb24"))
                last_duration = float(f.duration * f.time_base)
            self.video_end = self.pts[-1] + last_duration
            self.has_audio = bool(c.streams.audio)
        self.audio_codec = None
        if self.has_audio:
            with av.open(str(path)) as c:
                a = c.streams.audio[0]
                self.audio_codec = a.codec_context.name
                packets = [p for p in c.demux(a) if p.size]
                self.audio_start = float(packets[0].pts * packets[0].time_base)
                self.audio_end = float((packets[-1].pts + packets[-1].duration) * packets[-1].time_base)


def _no_leftovers(path: Path) -> None:
    """Nothing under the name, no partial file of any run (NAME.<pid>-<random>.partial), no lock (.NAME.lock)."""
    assert not path.exists()
    assert not list(path.parent.glob(f"{glob.escape(path.name)}*.partial")), list(path.parent.iterdir())
    assert not path.with_name(f".{path.name}.lock").exists()


# ---------------------------------------------------------------------------------------------------------------
# Mp4Sink: timing, audio, pixels
# ---------------------------------------------------------------------------------------------------------------
def test_mp4_full_clip_keeps_timestamps_pixels_and_audio(tmp_path: Path) -> None:
    src = _clip(SHORT)
    frames = _decode(src)
    out = tmp_path / "out.mp4"
    sink = _write(out, frames, time_base=frames[0].time_base, audio_from=src, crf=18)
    assert sink.frames_written == len(frames) == 38
    assert not sink.partial_path.exists()

    got, ref = Probe(out), Probe(src)
    assert got.video_codec == "h264"
    assert len(got.pts) == len(frames)
    assert got.avg_rate == 25
    assert max(abs(a - b) for a, b in zip(got.pts, ref.pts)) < 1e-3
    assert abs(got.video_end - ref.video_end) <= 1 / 25
    assert got.size == (1280, 720)
    diffs = [np.abs(a.astype(np.int16) - f.image.astype(np.int16)).mean() for a, f in zip(got.images, frames)]
    assert max(diffs) < 6.0, diffs
    # audio copied as is (AAC, no re-encode) and as long as the video
    assert got.audio_codec == "aac"
    assert got.audio_start == pytest.approx(ref.audio_start, abs=1e-3)
    assert got.audio_start <= got.pts[0] + 0.1
    assert abs(got.audio_end - got.video_end) < 0.1


def test_mp4_early_stop_late_start_and_fine_time_base(tmp_path: Path) -> None:
    src = _clip(LATE_START)
    frames = _decode(src, limit=20)  # the run was stopped after 20 frames
    assert frames[0].time_base == Fraction(1, 12800) and frames[0].pts_raw == 2560
    out = tmp_path / "stopped.mp4"
    _write(out, frames, time_base=frames[0].time_base, audio_from=src)

    got = Probe(out)
    assert len(got.pts) == 20
    assert got.pts[0] == pytest.approx(0.2, abs=1e-3)  # the source's start offset is kept
    assert max(abs(a - f.pts) for a, f in zip(got.pts, frames)) < 1e-3
    assert got.video_end == pytest.approx(0.2 + 20 / 25, abs=1e-3)
    assert got.audio_codec == "aac"
    assert got.audio_start == pytest.approx(624 / 48000, abs=1e-3)
    assert got.audio_end <= got.video_end + 0.1  # no audio past the last frame
    assert got.audio_end >= got.video_end - 0.1


def test_mp4_reordering_encoder_keeps_pts(tmp_path: Path) -> None:
    # preset medium uses B-frames (decode order != presentation order): timestamps must still come out exact
    tb = Fraction(1, 12800)
    frames = _synthetic(30, 96, 64, time_base=tb, start=2560, step=512)
    out = tmp_path / "bframes.mp4"
    _write(out, frames, time_base=tb, preset="medium")
    got = Probe(out)
    assert len(got.pts) == 30
    assert max(abs(a - f.pts) for a, f in zip(got.pts, frames)) < 1e-3
    assert got.avg_rate == 25


def test_mp4_constant_rate_without_time_base(tmp_path: Path) -> None:
    frames = _synthetic(12, 64, 48)
    out = tmp_path / "const.mkv"  # other containers by suffix
    _write(out, frames, fps=12.5)
    got = Probe(out)
    assert got.pts == pytest.approx([i / 12.5 for i in range(12)], abs=1e-3)
    assert got.avg_rate == Fraction(25, 2)
    assert not got.has_audio


def test_mp4_constant_rate_audio_is_cut_to_video(tmp_path: Path) -> None:
    src = _clip(SHORT)
    out = tmp_path / "const_audio.mp4"
    _write(out, _synthetic(10, 64, 48), fps=25.0, audio_from=src)
    got = Probe(out)
    assert got.audio_codec == "aac"
    assert got.video_end == pytest.approx(0.4, abs=1e-3)
    assert 0.3 <= got.audio_end <= got.video_end + 0.1


def test_mp4_repeated_timestamps_still_make_a_valid_file(tmp_path: Path) -> None:
    tb = Fraction(1, 25)
    frames = _synthetic(6, 64, 48, time_base=tb)
    frames[3].pts_raw = frames[2].pts_raw  # a stream hiccup
    out = tmp_path / "repeat.mp4"
    _write(out, frames, time_base=tb)
    got = Probe(out)
    assert len(got.pts) == 6
    assert all(b > a for a, b in zip(got.pts, got.pts[1:]))


@pytest.mark.parametrize(("height", "width"), [(375, 1242), (101, 203)])
def test_mp4_odd_sizes_are_padded(tmp_path: Path, height: int, width: int) -> None:
    frames = _synthetic(4, width, height)
    out = tmp_path / f"odd_{width}x{height}.mp4"
    _write(out, frames, crf=18)
    got = Probe(out)
    assert len(got.pts) == 4
    assert got.size == (width + width % 2, height + height % 2)
    for image, f in zip(got.images, frames):  # the source pixels sit top-left, unchanged
        assert np.abs(image[:height, :width].astype(np.int16) - f.image.astype(np.int16)).mean() < 6.0


def test_mp4_audio_source_without_audio(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mp4"
    with av.open(str(silent), "w") as c:
        s = c.add_stream("libx264", rate=25, options=FAST)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in _synthetic(5, 64, 48):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f.image, format="rgb24")))
        c.mux(s.encode(None))
    out = tmp_path / "out.mp4"
    _write(out, _synthetic(5, 64, 48), audio_from=silent)
    got = Probe(out)
    assert len(got.pts) == 5
    assert not got.has_audio


def test_mp4_replaces_target_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous run")
    frames = _synthetic(3, 64, 48)
    with Mp4Sink(out, fps=25.0, preset="ultrafast") as sink:
        for f in frames:
            sink.write(f, f.image)
        assert out.read_bytes() == b"previous run"
        assert sink.partial_path.exists()
    assert len(Probe(out).pts) == 3
    assert not sink.partial_path.exists()


def test_mp4_creates_missing_directories(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out.mp4"
    _write(out, _synthetic(2, 64, 48))
    assert len(Probe(out).pts) == 2


def test_mp4_finalises_when_the_run_fails(tmp_path: Path) -> None:
    out = tmp_path / "crash.mp4"
    frames = _synthetic(5, 64, 48)
    with pytest.raises(RuntimeError, match="boom"), Mp4Sink(out, fps=25.0, preset="ultrafast") as sink:
        for f in frames:
            sink.write(f, f.image)
        raise RuntimeError("boom")
    assert len(Probe(out).pts) == 5  # every frame written before the error is kept, playable


def test_mp4_no_frames_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "empty.mp4"
    with Mp4Sink(out, fps=25.0):
        pass
    _no_leftovers(out)


# ---------------------------------------------------------------------------------------------------------------
# Mp4Sink: errors
# ---------------------------------------------------------------------------------------------------------------
def _unwritable(tmp_path: Path, kind: str) -> Path:
    if kind == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here")
        return Path("/proc/segformer3d-rt-test.mp4")
    if kind == "parent_is_file":
        (tmp_path / "file").write_text("not a directory")
        return tmp_path / "file" / "sub" / "x.mp4"
    (tmp_path / "dir.mp4").mkdir()
    return tmp_path / "dir.mp4"


@pytest.mark.parametrize("kind", ["proc", "parent_is_file", "is_directory"])
def test_mp4_unwritable_path(tmp_path: Path, kind: str) -> None:
    path = _unwritable(tmp_path, kind)
    with pytest.raises(SinkError, match="cannot write") as info:
        Mp4Sink(path, fps=25.0)
    assert "\n" not in str(info.value)
    if kind != "is_directory":
        _no_leftovers(path)


def test_mp4_unknown_codec(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(SinkError, match=r"unknown video codec 'nosuchcodec' \(available H.264 encoders: .*libx264"):
        Mp4Sink(out, fps=25.0, codec="nosuchcodec")
    with pytest.raises(SinkError, match="'aac' is an audio codec, not a video encoder"):
        Mp4Sink(out, fps=25.0, codec="aac")
    _no_leftovers(out)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bitrate": "lots"}, "bad bitrate"),
    ({"pix_fmt": "nosuchfmt"}, "unknown pixel format"),
])
def test_mp4_bad_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(SinkError, match=message):
        Mp4Sink(out, fps=25.0, **kwargs)
    _no_leftovers(out)


def test_mp4_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="unknown video file type"):
        Mp4Sink(tmp_path / "x.xyz", fps=25.0)


def test_mp4_unreadable_audio_source(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(SinkError, match="cannot read audio from"):
        Mp4Sink(out, fps=25.0, audio_from=tmp_path / "missing.mp4")
    _no_leftovers(out)


def test_mp4_bad_preset_fails_before_any_frame(tmp_path: Path) -> None:
    out = tmp_path / "fail.mp4"
    with pytest.raises(SinkError, match="libx264 has no preset 'nosuchpreset'"):  # checked at construction
        Mp4Sink(out, fps=25.0, preset="nosuchpreset")
    _no_leftovers(out)


def test_mp4_bitrate_for_other_codecs(tmp_path: Path) -> None:
    out = tmp_path / "mpeg4.mp4"
    _write(out, _synthetic(5, 64, 48), codec="mpeg4", bitrate="500k", preset=None)
    got = Probe(out)
    assert got.video_codec == "mpeg4" and len(got.pts) == 5


# ---------------------------------------------------------------------------------------------------------------
# images, null, display
# ---------------------------------------------------------------------------------------------------------------
def test_image_dir_writes_rgb_pixels(tmp_path: Path) -> None:
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[2:4, 3:9] = (10, 150, 250)
    frames = [Frame(index=7, image=rgb, pts=None, t_capture=0.0),
              Frame(index=8, image=rgb, pts=None, t_capture=0.0, name="street.jpg")]
    with ImageDirSink(tmp_path / "out" / "frames") as sink:
        for f in frames:
            sink.write(f, f.image)
    for name in ("000007.png", "street.png"):
        back = cv2.imread(str(tmp_path / "out" / "frames" / name), cv2.IMREAD_COLOR)
        assert back is not None
        np.testing.assert_array_equal(back[..., ::-1], rgb)


def test_image_dir_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="cannot write images"):
        ImageDirSink(tmp_path / "file")
    with pytest.raises(SinkError, match="cannot write images"):
        ImageDirSink(tmp_path / "file" / "sub")
    with pytest.raises(SinkError, match="unknown image format"):
        ImageDirSink(tmp_path / "ok", ext="nosuchext")


def test_null_sink() -> None:
    with NullSink() as sink:
        f = _synthetic(1, 8, 8)[0]
        sink.write(f, f.image)
    assert sink.frames_written == 1 and not sink.stop_requested


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="$DISPLAY only matters on X11/Wayland systems")
def test_no_display_means_no_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, reason = display_available()
    assert not ok
    if hasattr(cv2, "imshow") and display_module._gui_backend() != "NONE":
        assert reason == "no display ($DISPLAY is not set)"
    with pytest.raises(SinkError, match="cannot show a window"):
        DisplaySink()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 probe")
def test_unreachable_display_is_detected_without_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV's Qt backend abort()s the process when the X server is missing; the probe runs in a child process
    if not hasattr(cv2, "imshow") or display_module._gui_backend() in ("NONE", "UNKNOWN"):
        pytest.skip("this OpenCV has no GUI")
    if Path("/tmp/.X11-unix/X4242").exists():
        pytest.skip("an X server really runs on :4242")
    monkeypatch.setenv("DISPLAY", ":4242")
    ok, reason = display_available()
    assert not ok
    assert reason.startswith("cannot open a window on display ':4242'")


class FakeGui:
    """Stands in for OpenCV's window functions (no display in CI)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.shown: list[np.ndarray] = []
        self.keys: list[int] = []
        self.visible = 1.0
        monkeypatch.setattr(display_module, "display_available", lambda: (True, "fake"))
        monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
        monkeypatch.setattr(cv2, "imshow", lambda title, img: self.shown.append(img.copy()))
        monkeypatch.setattr(cv2, "waitKey", lambda delay: self.keys.pop(0) if self.keys else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: self.visible)
        monkeypatch.setattr(cv2, "destroyWindow", lambda title: None)


@pytest.mark.parametrize("key", [ord("q"), 27])
def test_display_keys_stop(monkeypatch: pytest.MonkeyPatch, key: int) -> None:
    gui = FakeGui(monkeypatch)
    frame = Frame(index=0, image=np.zeros((1080, 1920, 3), np.uint8), pts=None, t_capture=0.0)
    frame.image[..., 0] = 255  # red
    with DisplaySink(max_size=(1280, 720)) as window:
        window.write(frame, frame.image)
        assert not window.stop_requested
        assert gui.shown[0].shape == (720, 1280, 3)  # fitted into max_size
        assert tuple(gui.shown[0][0, 0]) == (0, 0, 255)  # handed to OpenCV as BGR
        gui.keys.append(key)
        window.poll()
        assert window.stop_requested


def test_display_window_closed_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    gui = FakeGui(monkeypatch)
    frame = _synthetic(1, 32, 24)[0]
    with DisplaySink() as window:
        window.write(frame, frame.image)
        assert gui.shown[0].shape == (24, 32, 3)  # small frames are not enlarged
        gui.visible = 0.0  # the user closed the window
        window.poll()
        assert window.stop_requested


def test_gui_less_opencv_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    monkeypatch.setenv("DISPLAY", ":0")
    if hasattr(cv2, "imshow"):
        assert display_available() == (False, "OpenCV was built without GUI support")
    else:
        assert not display_available()[0]
