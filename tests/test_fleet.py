"""`fleet`: inputs, the manifest and resuming, failures listed with their reasons, a real local Ray cluster (2 CPUs,
2 workers) with one worker killed in the middle of a video, Ctrl-C, and outputs frame-identical to `run`'s."""
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

from segformer3d_rt.fleet.inputs import expand
from segformer3d_rt.fleet.manifest import Manifest, video_frames
from segformer3d_rt.pipeline.sources import open_source

SIZE = "128x256"


def make_clip(path: Path, frames: int, seed: int = 0) -> Path:
    with open_source(f"synthetic:seed={seed},size=128x256,fps=10,frames={frames}") as src, \
            av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 256, 128, "yuv420p"
        for f in src.frames():
            for p in s.encode(av.VideoFrame.from_ndarray(f.image, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for i in range(6):
        make_clip(folder / f"clip{i}.mp4", 10 + 2 * i, seed=i)
    return folder


def fleet(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segformer3d_rt", "fleet", *args, "--input-size", SIZE,
                           "--progress", "plain"], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_inputs_files_folders_globs_and_manifests(tmp_path, clips):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_clip(tmp_path / "a" / "same.mp4", 3)
    make_clip(tmp_path / "b" / "same.mp4", 3, seed=1)
    (tmp_path / "list.txt").write_text(f"# a comment\n{clips / 'clip0.mp4'}\nmissing.mp4\n\n")
    (tmp_path / "list.csv").write_text(f"path,note\n{clips / 'clip1.mp4'},x\n")
    videos = expand([str(tmp_path / "list.txt"), str(tmp_path / "list.csv"), str(tmp_path / "*" / "same.mp4"),
                     str(clips / "clip0.mp4"), str(tmp_path / "empty*.mp4"), str(clips)])
    names = [(Path(v.source).name, v.output, v.problem) for v in videos]
    assert names[0] == ("clip0.mp4", "clip0.mp4", None)
    assert names[1] == ("missing.mp4", "missing.mp4", "no such file")  # relative to the manifest: not there
    assert names[2] == ("clip1.mp4", "clip1.mp4", None)
    a, b = names[3], names[4]  # the same stem twice: told apart by a hash of the path
    assert a[1] != b[1] and a[1].startswith("same-") and b[1].startswith("same-")
    assert names[5][2] == "no file matches this pattern"
    assert [n[0] for n in names[6:]] == [f"clip{i}.mp4" for i in range(2, 6)]  # clip0 and clip1 only once


def test_local_fleet_lists_failures_resumes_and_checks_what_is_done(tmp_path, clips):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (tmp_path / "archive.txt").write_text("\n".join([*(str(clips / f"clip{i}.mp4") for i in range(3)),
                                                     str(tmp_path / "gone.mp4"), str(corrupt)]))
    out = tmp_path / "out"
    r = fleet(str(tmp_path / "archive.txt"), "-o", str(out), "--address", "local")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "running in this process" in r.stderr
    summary = json.loads((out / "fleet-summary.json").read_text())
    assert summary["totals"]["done"] == 3 and summary["totals"]["failed"] == 2 and summary["mode"] == "local"
    errors = {Path(f["source"]).name: f["error"] for f in summary["failures"]}
    assert "no such file" in errors["gone.mp4"] and "corrupt.mp4" in errors["corrupt.mp4"]
    for f in summary["failures"]:
        assert "\n" not in f["error"]
    for i in range(3):
        row = next(v for v in summary["videos"] if v["output"] == f"clip{i}.mp4")
        assert row["frames_out"] == 10 + 2 * i == video_frames(out / f"clip{i}.mp4")
    # a rerun skips what is done, checked against its statistics: a damaged output is done again
    damaged = out / "clip1.mp4"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    assert not Manifest(out).is_done("clip1.mp4", str(clips / "clip1.mp4"))
    r = fleet(str(tmp_path / "archive.txt"), "-o", str(out), "--address", "local")
    summary = json.loads((out / "fleet-summary.json").read_text())
    assert summary["totals"]["done"] == 3 and summary["totals"]["done_before"] == 2, r.stderr
    row = next(v for v in summary["videos"] if v["output"] == "clip1.mp4")
    assert row["attempts"] == 2 and video_frames(damaged) == 12
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".partial") == []


def test_ctrl_c_lets_the_video_in_hand_finish_and_the_next_run_continues(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        make_clip(src / f"long{i}.mp4", 60, seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "segformer3d_rt", "fleet", str(src), "-o", str(out),
                             "--address", "local", "--input-size", SIZE, "--progress", "plain"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = out / "fleet-manifest.json"
    deadline = time.monotonic() + 120
    while not (manifest.is_file() and '"done"' in manifest.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    rows = json.loads(manifest.read_text())["videos"]
    done = [r for r in rows if r["status"] == "done"]
    assert 1 <= len(done) < 4 and all(r["status"] in ("done", "pending") for r in rows)
    for r in done:  # what is recorded done really is
        assert video_frames(out / r["output"]) == r["frames_out"] == 60
    r = fleet(str(src), "-o", str(out), "--address", "local")
    summary = json.loads((out / "fleet-summary.json").read_text())
    assert r.returncode == 0 and summary["totals"]["done"] == 4
    assert summary["totals"]["done_before"] == len(done)


ray = pytest.importorskip("ray", reason="the Ray tests need ray (the [ray] extra)")


def test_ray_fleet_two_workers_survives_a_killed_worker_and_matches_run(tmp_path, clips):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        make_clip(src / f"v{i}.mp4", 40, seed=i)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "segformer3d_rt", "fleet", str(src), "-o", str(out), "--workers",
                             "2", "--input-size", SIZE, "--no-hud", "--progress", "plain"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # a local cluster: this machine's 2 CPUs
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        busy = subprocess.run(["pgrep", "-f", "ray::VideoWorker.process"], capture_output=True, text=True)
        pids = [int(p) for p in busy.stdout.split()]
        if pids and (out / "fleet-manifest.json").is_file():
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)  # a worker lost in the middle of a video
        time.sleep(0.2)
    _, err = proc.communicate(timeout=600)
    assert killed is not None, f"no worker was ever seen busy: {err}"
    assert proc.returncode == 0, err
    summary = json.loads((out / "fleet-summary.json").read_text())
    assert summary["mode"] == "ray" and summary["totals"]["done"] == 6, summary["totals"]
    assert len({w["pid"] for w in summary["workers"]}) >= 3  # two, and the one that replaced the dead
    retried = [v for v in summary["videos"] if v["attempts"] >= 2]
    assert retried, "the killed worker's video was not retried"
    assert {v["pid"] for v in summary["videos"]} - {killed} == {v["pid"] for v in summary["videos"]}
    for v in summary["videos"]:
        assert video_frames(out / v["output"]) == v["frames_out"] == 40
    assert not list(out.glob("*.partial"))  # the dead worker's half-written file was cleared, never taken as done
    # the same video through `run`, same options: identical frames (the HUD, timing text, is off in both)
    ref = tmp_path / "ref.mp4"
    subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", str(src / "v0.mp4"), "-o", str(ref),
                    "--input-size", SIZE, "--no-hud", "--progress", "none"], check=True, capture_output=True)
    a, b = decoded(ref), decoded(out / "v0.mp4")
    assert len(a) == len(b) == 40 and all((x == y).all() for x, y in zip(a, b))
