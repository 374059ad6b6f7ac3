"""Outputs that survive their run and never clobber each other, through real `run` processes on small inputs:
``kill -9`` and a full disk (a tiny tmpfs) leave a file that plays; a second run aiming at an output being written is
refused before work; an output folder removed mid-run stops the run at once and no message names a file that is not
there; every audio track of the source is written, or named when left out. Every check opens what is on disk with
PyAV and decodes it."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import partial_files, wait_for_frames
from segformer3d_rt.errors import SinkError
from segformer3d_rt.pipeline.frames import Frame
from segformer3d_rt.pipeline.sinks import Mp4Sink
from segformer3d_rt.pipeline.sinks import audio as audio_module
from segformer3d_rt.runtime import paths

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
LONG_SOURCE = "synthetic:frames=20000,size=64x128"  # far longer than any test waits: signals always come mid-run


def run_args(source: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segformer3d_rt", "run", source, "-o", str(out), "--input-size", "64x128",
            "--preset", "ultrafast", "--device", "cpu", "--progress", "none", *extra]


def start(source: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(run_args(source, out, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a run (killed if it overstays); its stderr."""
    try:
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


def playable_frames(path: Path) -> int:
    """The frames a player shows from ``path``: decoded until the end or the first damaged packet (a file cut by
    a kill may end inside a frame's data)."""
    n = 0
    with av.open(str(path)) as c:
        with contextlib.suppress(av.FFmpegError):
            for _ in c.decode(video=0):
                n += 1
    return n


def leftovers(out: Path) -> list[Path]:
    """Partial files of any run and the lock file of ``out``."""
    return [*partial_files(out), *out.parent.glob(f".{out.name}.lock")]


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str):
    """A tmpfs of ``size`` (e.g. "3m") mounted on ``folder``: a disk that fills up."""
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs (a disk that fills up) needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# -- crash safety -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_kill_9_mid_run_leaves_a_file_that_plays(tmp_path, suffix):
    """The file on disk plays while it is written (fragmented MP4, Matroska clusters): a run killed outright
    leaves its frames up to about a second before the kill, in a file that opens and decodes. Its stale lock does
    not stop the next run, which writes the output while the killed run's file is left alone."""
    out = tmp_path / f"rec{suffix}"
    proc = start(LONG_SOURCE, out)
    try:
        wait_for_frames(out, proc, settle_s=2.0)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    left = partial_files(out)
    assert len(left) == 1, list(tmp_path.iterdir())
    killed = left[0]
    assert playable_frames(killed) > 0
    size = killed.stat().st_size

    again = start("synthetic:frames=10,size=64x128", out)
    err = finish(again)
    assert again.returncode == 0, err
    assert playable_frames(out) == 10
    assert partial_files(out) == [killed] and killed.stat().st_size == size  # the killed run's file untouched
    assert not out.with_name(f".{out.name}.lock").exists()


def test_a_full_disk_stops_the_run_at_once_and_keeps_a_file_that_plays(tmp_path):
    """On a 3 MB tmpfs: the first write that fails stops the run (exit 2, one error line, the stats JSON says so
    and counts the frames in flight), and the frames written are kept in a file that exists, plays, and is named
    as such. Before: an mp4 without its index, which does not open."""
    stats = tmp_path / "stats.json"
    with tiny_disk(tmp_path / "disk", "3m") as disk:
        out = disk / "full.mp4"
        proc = start("synthetic:frames=3000,size=128x256", out, "--crf", "0", "--stats-json", str(stats))
        err = finish(proc)
        assert proc.returncode == 2, err
        assert "Traceback" not in err
        assert error_lines(err)[-1].startswith("segformer3d-rt: error: cannot write") and "No space left" in err
        report = json.loads(stats.read_text())
        frames = report["frames"]
        assert "No space left" in report["error"]
        assert frames["in"] < 3000 and frames["in"] - frames["out"] <= 64, frames  # stopped, not run through
        assert frames["in"] == frames["out"] + frames["dropped"] + frames["abandoned"]
        kept = disk / "full.incomplete.mp4"
        said = [ln for ln in error_lines(err) if "is kept in" in ln]
        assert len(said) == 1 and f"is kept in '{kept}' (it plays: " in said[0], err
        shown = playable_frames(kept)
        assert 0 < shown <= frames["out"]
        assert f"(it plays: {shown} frames)" in said[0]  # what the line says is what a player gets
        assert leftovers(out) == []


def test_finalising_on_a_full_disk_keeps_the_fragmented_file(tmp_path, caplog):
    """Finalising an MP4 remuxes it into a plain file, which needs its space once more: where the disk cannot
    hold the copy, the fragmented file, complete and playable, takes the final name, said in one line."""
    rng = np.random.default_rng(0)
    frames = [Frame(index=i, image=rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), pts=i / 25, t_capture=0.0)
              for i in range(40)]

    def write(path: Path) -> Mp4Sink:
        with Mp4Sink(path, fps=25.0, preset="ultrafast") as sink:
            for f in frames:
                sink.write(f, f.image)
        return sink

    write(tmp_path / "reference.mp4")
    size = (tmp_path / "reference.mp4").stat().st_size
    with tiny_disk(tmp_path / "disk", f"{(size * 3 // 2) // 4096 * 4 + 8}k") as disk:
        out = disk / "out.mp4"
        with caplog.at_level(logging.WARNING):
            write(out)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1 and "is kept fragmented (it plays" in lines[0] and "No space left" in lines[0], lines
        assert playable_frames(out) == 40
        assert leftovers(out) == []


# -- ownership ------------------------------------------------------------------------------------------------------

def test_a_second_run_at_an_output_being_written_is_refused_and_the_first_is_intact(tmp_path):
    out, stats_a, stats_b = tmp_path / "same.mp4", tmp_path / "a.json", tmp_path / "b.json"
    first = start(LONG_SOURCE, out, "--stats-json", str(stats_a))
    try:
        wait_for_frames(out, first, settle_s=0.5)
        second = start("synthetic:frames=30,size=64x128", out, "--stats-json", str(stats_b))
        err = finish(second)
        assert first.poll() is None  # the refusal came while the first run was writing
        first.send_signal(signal.SIGINT)
        first_err = finish(first)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "another run is writing it" in lines[0] and f"pid {first.pid}" in lines[0], err
    assert "another run" in json.loads(stats_b.read_text())["error"]
    assert first.returncode == 130, first_err
    report = json.loads(stats_a.read_text())
    assert report["error"] is None
    assert playable_frames(out) == report["frames"]["out"] > 0  # every frame of the first run, nothing else
    assert leftovers(out) == []


def test_a_second_sink_on_the_same_output_is_refused_and_temp_names_are_unique(tmp_path, monkeypatch):
    out = tmp_path / "x.mp4"
    with Mp4Sink(out, fps=25.0, preset="ultrafast") as first:
        with pytest.raises(SinkError, match="another run is writing it"):
            Mp4Sink(out, fps=25.0, preset="ultrafast")
        assert first.partial_path.exists() and first.partial_path.name.startswith(f"x.mp4.{os.getpid()}-")
        assert partial_files(out) == [first.partial_path]  # the refused one made no file of its own
    names = {paths.create_temp(out)[0] for _ in range(20)}
    assert len(names) == 20
    for p in names:
        p.unlink()
    # no flock (Windows): written unlocked, without a word above debug
    monkeypatch.setattr(paths, "fcntl", None)
    with Mp4Sink(out, fps=25.0, preset="ultrafast") as sink:
        sink.write(Frame(index=0, image=np.zeros((48, 64, 3), np.uint8), pts=0.0, t_capture=0.0),
                   np.zeros((48, 64, 3), np.uint8))
        assert not out.with_name(".x.mp4.lock").exists()
    assert playable_frames(out) == 1


def test_the_output_folder_removed_mid_run_stops_it_and_no_line_names_a_missing_file(tmp_path):
    """Writing into a removed file succeeds and is lost: the run notices at the next frame, stops (exit 2, the
    stats JSON says why), and says nothing was kept instead of naming a file that no longer exists."""
    folder, stats = tmp_path / "d", tmp_path / "stats.json"
    out = folder / "x.mp4"
    proc = start("synthetic:frames=2000,size=64x128", out, "--stats-json", str(stats))
    try:
        wait_for_frames(out, proc, settle_s=0.5)
        shutil.rmtree(folder)
        removed = time.time()
        err = finish(proc)
        took_s = time.time() - removed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    report = json.loads(stats.read_text())
    assert "no longer exists" in report["error"] and "is gone" in report["error"]
    assert report["frames"]["in"] < 2000 and took_s < 60, (report["frames"], took_s)
    assert "kept in" not in err and "is lost" in err, err
    assert not folder.exists()


# -- audio tracks ---------------------------------------------------------------------------------------------------
RATE, SAMPLES = 25, 48000
TRACKS = [("aac", "eng"), ("libmp3lame", "fra"), ("pcm_s16le", "deu")]  # copied, copied, transcoded into mp4


def craft_tracks(path: Path, tracks: list[tuple[str, str]], n: int = 25) -> Path:
    """``n`` frames of video and one tone per track (each its own pitch and language), in Matroska."""
    with av.open(str(path), "w", format="matroska") as out:
        v = out.add_stream("libx264", rate=RATE, options={"preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = 128, 64, "yuv420p"
        audio = []
        for codec, language in tracks:
            a = out.add_stream(codec, rate=SAMPLES, layout="stereo")
            a.metadata["language"] = language
            audio.append(a)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((64, 128, 3), 8 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, RATE)
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        total = n * SAMPLES // RATE
        for k, a in enumerate(audio):
            fmt = a.codec_context.codec.audio_formats[0].name
            chunk = a.codec_context.frame_size or 1024
            resample = av.AudioResampler(format=fmt, layout="stereo", rate=SAMPLES)
            for s0 in range(0, total, chunk):
                t = np.arange(s0, min(total, s0 + chunk)) / SAMPLES
                wave = (0.3 * np.sin(2 * np.pi * 220 * (k + 1) * t) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(np.repeat(wave[None], 2, axis=0), format="s16p", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = SAMPLES, s0, Fraction(1, SAMPLES)
                for rf in resample.resample(frame):
                    out.mux(a.encode(rf))
            out.mux(a.encode(None))
    return path


def audio_tracks(path: Path) -> list[tuple[str, str | None, float]]:
    """(codec, language, seconds of audio) per audio stream of ``path``."""
    found = []
    with av.open(str(path)) as c:
        indices = [s.index for s in c.streams.audio]
    for index in indices:  # one pass per stream: each read to its end
        with av.open(str(path)) as c:
            a = next(s for s in c.streams.audio if s.index == index)
            end = max((float((p.pts + p.duration) * p.time_base) for p in c.demux(a) if p.size and p.pts is not None),
                      default=0.0)
            codec = "mp3" if a.codec_context.name.startswith("mp3") else a.codec_context.name  # decoder: mp3float
            found.append((codec, a.metadata.get("language"), end))
    return found


def test_every_audio_track_is_kept(tmp_path):
    """A clip with three audio tracks: all three in the output, each copied or transcoded by the audio plan, in
    order, with its language, as long as the video. Before: the first was kept and two dropped silently."""
    clip = craft_tracks(tmp_path / "three.mkv", TRACKS)
    out = tmp_path / "out.mp4"
    proc = start(str(clip), out)
    err = finish(proc)
    assert proc.returncode == 0, err
    got = audio_tracks(out)
    assert [(codec, lang) for codec, lang, _ in got] == [("aac", "eng"), ("mp3", "fra"), ("aac", "deu")], got
    assert all(0.9 <= end <= 1.1 for _, _, end in got), got  # 25 frames at 25 fps
    said = [ln for ln in error_lines(err) if "audio track" in ln]
    assert len(said) == 1 and "audio track 3 of 'three.mkv': pcm_s16le cannot be copied" in said[0], err
    assert playable_frames(out) == 25


def test_a_track_that_cannot_be_written_is_named_in_one_line(tmp_path, monkeypatch, caplog):
    clip = craft_tracks(tmp_path / "three.mkv", TRACKS[:2] + [("aac", "spa")], n=10)
    real = audio_module._trial

    def refuse_the_second(path, fmt, mode, *args, **kwargs):  # the trial of the second track fails
        index = args[0] if args else kwargs.get("index", 0)
        return "refused for the test" if index == 1 else real(path, fmt, mode, *args, **kwargs)

    monkeypatch.setattr(audio_module, "_trial", refuse_the_second)
    out = tmp_path / "out.mkv"
    frames = [Frame(index=i, image=np.zeros((64, 128, 3), np.uint8), pts=i / 25, t_capture=0.0) for i in range(10)]
    with caplog.at_level(logging.INFO):
        with Mp4Sink(out, fps=25.0, preset="ultrafast", audio_from=clip) as sink:
            for f in frames:
                sink.write(f, f.image)
    lines = [r.getMessage() for r in caplog.records if "audio" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("audio track 2 of 'three.mkv' left out of out.mkv: mp3"), lines[0]
    assert "cannot be copied (refused for the test)" in lines[0]
    assert "the other tracks are written" in lines[0]
    assert [(codec, lang) for codec, lang, _ in audio_tracks(out)] == [("aac", "eng"), ("aac", "spa")]
    assert sink.audio_modes == ["copy", "copy"]
