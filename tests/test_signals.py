"""Real signals to a real `run` process: a closed terminal (SIGHUP) and SIGTERM finalise like Ctrl-C; a second
Ctrl-C aborts fast yet leaves a playable file and counts what it abandoned; nohup keeps a run going. Every check
decodes the output with PyAV and compares it with the stats JSON."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import threading
from pathlib import Path

import av
import pytest

from helpers import ctrl_c_after, interrupt, wait_for_frames

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# A source far longer than any test waits (read losslessly, as a file is): the signal always comes mid-run, however
# fast or loaded the machine (the 170-frame clip could end before the signal on a quiet one).
LONG_SOURCE = "synthetic:size=144x256,frames=20000"


def run_args(clip: Path | str, out: Path, stats: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segformer3d_rt", "run", str(clip), "-o", str(out), "--stats-json", str(stats),
            "--input-size", "128x256", "--preset", "ultrafast", "--device", "cpu", "--no-live", *extra]


def hangups_default() -> None:
    """In the child: SIGHUP as a terminal session has it. Under `nohup pytest` it is inherited ignored, and the run
    rightly carries on (test_nohup_keeps_the_run_going_after_a_hangup); these tests are about a plain terminal."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def check_finalised(out: Path, stats: Path) -> dict:
    """The video plays to its end, holds exactly the frames the stats count as written, no .partial is left."""
    report = json.loads(stats.read_text())
    frames = report["frames"]
    assert 0 < frames["out"] < 20000, frames
    assert decoded_frames(out) == frames["out"]
    assert not list(out.parent.glob("*.partial"))
    assert report["interrupted"] is True and report["error"] is None
    assert frames["in"] == frames["out"] + frames["dropped"] + frames["abandoned"]
    return report


def test_closed_terminal_finalises_the_video_like_ctrl_c(tmp_path):
    """The run's controlling terminal is a pty; closing its master side is what closing a terminal window or
    losing an SSH session does: the kernel sends SIGHUP and the terminal is gone for writing."""
    out, stats = tmp_path / "hup.mp4", tmp_path / "hup.json"
    master, slave = pty.openpty()

    def take_terminal() -> None:  # in the child, a new session leader: the pty becomes its controlling terminal
        hangups_default()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(run_args(LONG_SOURCE, out, stats, "--batch-size", "1"), stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True, preexec_fn=take_terminal, env=ENV)
    os.close(slave)
    stop = threading.Event()
    shown = bytearray()

    def read_terminal() -> None:  # what a terminal does: read, so the run never blocks on a full pty
        while not stop.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    shown.extend(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        wait_for_frames(out, proc)
        stop.set()
        reader.join()
        os.close(master)  # hang up
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130
    assert b"Traceback" not in bytes(shown)
    check_finalised(out, stats)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_stop_signal_drains_every_frame_read(tmp_path, sig):
    out, stats = tmp_path / "stop.mp4", tmp_path / "stop.json"
    proc = subprocess.Popen(run_args(LONG_SOURCE, out, stats, "--progress", "plain"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=hangups_default)
    err, _ = interrupt(proc, out, sig)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = check_finalised(out, stats)
    assert report["frames"]["abandoned"] == 0 and report["frames"]["in"] == report["frames"]["out"]


def test_second_ctrl_c_aborts_fast_keeps_a_playable_file_and_counts_the_rest(tmp_path):
    out, stats = tmp_path / "abort.mp4", tmp_path / "abort.json"
    # deep queues and a larger input: many frames in flight when the second Ctrl-C comes
    args = run_args(LONG_SOURCE, out, stats, "--progress", "plain", "--queue-size", "16")
    args[args.index("--input-size") + 1] = "256x512"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    err, after_second_s = interrupt(proc, out, signal.SIGINT, signal.SIGINT, gap_s=0.2)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = check_finalised(out, stats)
    abandoned = report["frames"]["abandoned"]
    assert abandoned > 0, report["frames"]
    assert f"{abandoned} frames in flight abandoned" in err  # said in the summary too
    # fast: it did not process what it abandoned (each frame costs the inference time, on one CPU thread)
    per_frame_s = report["latency_ms"]["stages"]["inference"]["p50"] / 1000
    assert after_second_s < 10 + abandoned * per_frame_s / 2, (after_second_s, abandoned, per_frame_s)


def test_nohup_keeps_the_run_going_after_a_hangup(tmp_path):
    out, stats = tmp_path / "nohup.mp4", tmp_path / "nohup.json"

    def ignore_hangups() -> None:  # what nohup does before exec
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(run_args(LONG_SOURCE, out, stats, "--progress", "none", "--max-frames", "300"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=ignore_hangups)
    try:
        wait_for_frames(out, proc, settle_s=0.2)
        assert proc.poll() is None  # the hang-up comes mid-run
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    report = json.loads(stats.read_text())
    assert report["interrupted"] is False and report["frames"]["out"] == 300
    assert decoded_frames(out) == 300


def test_ctrl_c_during_eval_keeps_the_images_scored(tmp_path):
    """A long evaluation stopped by Ctrl-C (to the whole process group, data worker included, as a terminal sends
    it) prints and writes the figures over the images done, says it is partial, exits 130."""
    import re

    out = tmp_path / "res.json"
    cmd = [sys.executable, "-m", "segformer3d_rt", "eval", "--data", "synthetic:n=100000,size=64x128",
           "--input-size", "64x128", "--workers", "1", "--json", str(out)]
    # the backend is up (its start-up line): images are being scored from then on
    code, stdout, err = ctrl_c_after(cmd, "start-up", stream="stderr", settle_s=3.0)
    assert code == 130, err
    assert "Traceback" not in err
    m = re.search(r"interrupted after (\d+) of 100000 images", err)
    assert m, err
    result = json.loads(out.read_text())
    assert result["interrupted"] is True and result["of"] == 100000
    assert 0 < result["images"] == int(m.group(1)) < 100000
    assert result["segmentation"]["pixels"] > 0 and result["depth"]["count"] > 0  # scored, not just counted
    assert f"{result['images']} images of 100000 (interrupted)" in stdout
