"""The soak sampler on this very process (/proc), on a short real live run, and the `soak` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from segformer3d_rt import build_model, save_checkpoint
from segformer3d_rt.benchmark.soak import (
    FLAT_FIELDS, Sampler, heap_status, proc_status, soak, summarise, thread_cpu_s,
)
from segformer3d_rt.pipeline.config import RunConfig

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="the sampler reads Linux's /proc")
TINY = "synthetic:seed=2,size=64x128,fps=25"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_model("b0"), tmp_path_factory.mktemp("weights") / "b0.safetensors")


def test_proc_status_counts_this_process_threads_and_files():
    before, heap_before = proc_status(), heap_status()
    assert before["rss_mib"] > 10 and before["threads"] == len(os.listdir("/proc/self/task"))
    ballast = bytearray(64 << 20)  # touched pages: resident
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    release = threading.Event()
    extra = threading.Thread(target=release.wait)
    extra.start()
    with tempfile.TemporaryFile() as f:
        during, heap_during = proc_status(), heap_status()
        assert f.fileno() >= 0
    release.set()
    extra.join()
    assert during["threads"] == before["threads"] + 1
    assert during["open_fds"] == before["open_fds"] + 1
    assert during["rss_mib"] - before["rss_mib"] > 50
    if heap_before["heap_used_mib"] is not None:  # glibc: the 64 MiB are malloc's, in use
        assert heap_during["heap_used_mib"] - heap_before["heap_used_mib"] == pytest.approx(64, abs=4)
    del ballast
    if heap_before["heap_used_mib"] is not None:
        assert heap_status()["heap_used_mib"] - heap_before["heap_used_mib"] < 8  # freed: back


def test_thread_cpu_is_told_apart_by_thread_name():
    spun, release = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.3  # 0.3 s of CPU, however busy the machine is
        while time.thread_time() < end:
            pass
        spun.set()
        release.wait()  # alive (and idle) at the next sample

    sampler = Sampler(interval_s=1.0)
    busy = threading.Thread(target=spin, name="busy")
    first = sampler.sample()
    busy.start()
    spun.wait()
    s = sampler.sample()
    release.set()
    busy.join()
    assert first["cpu_pct"] is None and first["thread_cpu_pct"] == {}  # no interval yet
    dt = s["t_s"] - first["t_s"]
    tick = 100.0 * 0.02 / dt  # /proc counts in 10 ms ticks
    assert s["thread_cpu_pct"]["busy"] == pytest.approx(100.0 * 0.3 / dt, abs=tick)
    assert s["thread_cpu_pct"]["main"] < tick  # the main thread only waited
    assert s["cpu_pct"] >= s["thread_cpu_pct"]["busy"] - tick
    assert thread_cpu_s()[threading.main_thread().native_id] >= 0


def test_summary_compares_first_and_last_quarters_without_start_and_wind_down():
    def sample(i: int, **kw) -> dict:
        base = {"t_s": float(i), "rss_mib": 100.0 + i, "threads": 12, "open_fds": 8, "cpu_pct": 50.0,
                "dashboard_cpu_pct": 1.0, "fps": 25.0, "latency_p50_ms": 40.0, "frames_out": 25 * i}
        return {**base, **kw}

    samples = [sample(0, cpu_pct=None, fps=None)] + [sample(i) for i in range(1, 9)] \
        + [sample(9, threads=3, cpu_pct=5.0, final=True)]
    s = summarise(samples)
    assert s["samples"] == 10 and s["intervals"] == 8 and s["frames_out"] == 225 and s["duration_s"] == 9.0
    q = s["quarters"]
    assert set(q) == set(FLAT_FIELDS)
    assert q["rss_mib"] == {"first": 101.5, "last": 107.5, "change": 6.0}  # samples 1-2 against 7-8
    assert q["threads"]["change"] == 0 and q["cpu_pct"]["change"] == 0  # the wind-down sample is left out
    assert s["max"]["threads"] == 12
    assert summarise(samples[:4])["quarters"] is None  # 3 intervals: too short to compare


def test_a_short_live_run_is_sampled_at_its_interval(weights):
    cfg = RunConfig(source=TINY + ",frames=60", weights=str(weights), live=True, backend="torch", device="cpu",
                    input_size=(64, 128), progress="none").validate()
    t0 = time.perf_counter()
    code, report = soak(cfg, interval_s=0.4)
    wall = time.perf_counter() - t0
    assert code == 0 and report["run"]["error"] is None
    samples = report["samples"]
    assert samples[0]["t_s"] == 0.0 and samples[0]["frames_out"] == 0
    assert len(samples) >= 4 and all(b["t_s"] > a["t_s"] for a, b in zip(samples, samples[1:]))
    steps = [b["t_s"] - a["t_s"] for a, b in zip(samples, samples[1:]) if not b.get("final")]
    assert max(steps) < 0.4 * 3 and sorted(steps)[len(steps) // 2] == pytest.approx(0.4, abs=0.1)
    assert samples[-1]["t_s"] < wall
    outs = [s["frames_out"] for s in samples]
    assert outs == sorted(outs) and outs[-1] == report["run"]["frames"]["out"] > 0
    assert samples[-1]["frames_in"] == 60
    assert all(s["rss_mib"] > 0 for s in samples)
    assert max(s["threads"] for s in samples) >= samples[0]["threads"] + 5  # the five stage threads
    # the stages ran in their own threads, and each is named in the per-thread CPU
    named = set().union(*(s["thread_cpu_pct"] for s in samples))
    assert {"main", "pipeline-capture", "pipeline-inference", "pipeline-render"} <= named
    assert sum(s["thread_cpu_pct"].get("pipeline-inference", 0.0) for s in samples) > 0
    assert report["summary"]["frames_out"] == outs[-1]


def _soak_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segformer3d_rt", "soak", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_soak_command_writes_every_sample_and_prints_the_quarters(weights, tmp_path):
    out = tmp_path / "soak.json"
    common = ["--weights", str(weights), "--input-size", "64x128", "--backend", "torch", "--device", "cpu",
              "--progress", "none"]
    r = _soak_cli(TINY, "--max-frames", "75", "--interval", "0.5", "--json", str(out), *common)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["run"]["frames"]["in"] == 75 and report["run"]["source"]["live"] is True
    assert report["interval_s"] == 0.5 and len(report["samples"]) >= 5
    assert report["summary"]["quarters"] is not None
    assert "first quarter" in r.stdout and "rss_mib" in r.stdout and "dashboard_cpu_pct" in r.stdout
    assert not list(tmp_path.glob("*.partial"))

    # bad input: one line, code 2, nothing written over what the user gave
    before = weights.read_bytes()
    for args, needle in [(["--interval", "0", "--json", str(tmp_path / "x.json")], "--interval"),
                         (["--json", str(weights)], str(weights))]:
        r = _soak_cli(TINY, "--max-frames", "5", *args, *common)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert needle in lines[0]
    assert weights.read_bytes() == before and not (tmp_path / "x.json").exists()
