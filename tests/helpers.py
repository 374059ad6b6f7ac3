"""Small checks several test files share."""
from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from segformer3d_rt import cli


def one_error_line(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    """Run the real CLI in-process: exit 2, no traceback, exactly one line on stderr holding every needle."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]


def partial_files(out: Path) -> list[Path]:
    """The files runs write before ``out`` is final: NAME.<pid>-<random>.partial, one per run, never shared (and
    NAME.partial, the one name every run shared before)."""
    return sorted(out.parent.glob(f"{glob.escape(out.name)}*.partial"))


def partial_size(out: Path) -> int:
    sizes = [0]
    for p in partial_files(out):
        with contextlib.suppress(FileNotFoundError):
            sizes.append(p.stat().st_size)
    return max(sizes)


def wait_for_frames(out: Path, proc: subprocess.Popen, settle_s: float = 1.0) -> None:
    """Until the first frame is in the partial file (the muxer writes its header with the first packet; on a
    busy machine that can take a while), then a little longer."""
    deadline = time.time() + 180
    while time.time() < deadline and partial_size(out) == 0:
        assert proc.poll() is None, "the run ended before it started writing"
        time.sleep(0.05)
    assert partial_size(out) > 0
    time.sleep(settle_s)


def interrupt(proc: subprocess.Popen, out: Path, *signals: int, settle_s: float = 1.0,
              gap_s: float = 0.2) -> tuple[str, float]:
    """Once frames are being written, send the signals (gap_s apart) to a running `run`; wait for it to end
    (killed if anything goes wrong). Returns its stderr and the seconds it took after the last signal."""
    try:
        wait_for_frames(out, proc, settle_s)
        for i, sig in enumerate(signals or (signal.SIGINT,)):
            if i:
                time.sleep(gap_s)
            proc.send_signal(sig)
        last = time.time()
        _, err = proc.communicate(timeout=120)
        return err, time.time() - last
    finally:
        if proc.poll() is None:
            proc.kill()


def ctrl_c_after(cmd: list[str], marker: str, stream: str = "stdout", settle_s: float = 0.0,
                 wait_s: float = 240) -> tuple[int, str, str]:
    """Start ``cmd`` in a session of its own; once a line of ``stream`` holds ``marker`` (or after ``wait_s``),
    wait ``settle_s`` and send SIGINT to the whole group, as a terminal's Ctrl-C does (data workers get it too).
    Returns (exit code, the rest of stdout, the rest of stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + wait_s
        for line in getattr(proc, stream):
            if marker in line or time.time() > deadline:
                break
        time.sleep(settle_s)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
