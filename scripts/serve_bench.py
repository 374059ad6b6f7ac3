#!/usr/bin/env python3
"""Benchmarks of `serve` for BENCHMARKS.md (figures, not tests):

1. batching on this machine: N synthetic streams through one server batched (--max-batch N) against the same
   streams at batch 1, same process, alternating rounds; frames out per second, capture-to-output p50/p99 and
   the network's time per batch;
2. glass-to-glass latency in headless Chromium (Debian's chromium + chromedriver): the capture time painted into
   each frame (serve --stamp) read back in the page, for 1 and N streams, WebRTC and MJPEG, beside the
   network's p50;
3. a /metrics scrape at 16 streams: median time and series count.

    python scripts/serve_bench.py --json serve_bench.json [--size 256x512] [--streams 4] [--seconds 15]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segformer3d_rt.serve.config import build_serve_config  # noqa: E402
from segformer3d_rt.serve.server import Server  # noqa: E402


def server(n: int, size: str, fps: float, max_batch: int, **kw) -> Server:
    specs = [f"s{i}=synthetic:seed={i},size={size},fps={fps}" for i in range(n)]
    cfg = build_serve_config({"streams": specs, "port": 0, "max_batch": max_batch, **kw}, {"input_size": size})
    return Server(cfg).start()


def streams(srv: Server) -> list[dict]:
    with urllib.request.urlopen(srv.url + "api/streams", timeout=30) as r:
        return json.loads(r.read())["streams"]


def wait_frames(srv: Server, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(s["frames"]["out"] >= n for s in streams(srv)):
        if time.monotonic() > deadline:
            raise SystemExit("streams did not start")
        time.sleep(0.2)


def batching_round(n: int, size: str, fps: float, max_batch: int, seconds: float) -> dict:
    srv = server(n, size, fps, max_batch, max_wait_ms=10.0)
    try:
        wait_frames(srv, 5)
        time.sleep(2.0)  # warm: every padded size compiled, pacing settled
        t0, before = time.perf_counter(), {s["name"]: s["frames"]["out"] for s in streams(srv)}
        lat0 = {s.name: s.stats.latency.copy() for s in srv.hub.streams()}
        inf0 = srv.batcher.inference.copy()
        time.sleep(seconds)
        t1, after = time.perf_counter(), {s["name"]: s["frames"]["out"] for s in streams(srv)}
        lat = [h for h in (s.stats.latency.copy() for s in srv.hub.streams())]
        inf = srv.batcher.inference.copy()
        hist = srv.batcher.snapshot()["frames_per_batch"]
    finally:
        srv.stop()
    # the window's own latencies: the histograms' counts minus those before it (same bucket layout)
    window = lat[0].copy()
    window._counts[:] = 0
    for h, name in zip(lat, before):
        window._counts += h._counts - lat0[name]._counts
    window.count = int(window._counts.sum())
    inf_w = inf.copy()
    inf_w._counts = inf._counts - inf0._counts
    inf_w.count = int(inf_w._counts.sum())
    p50, p99 = window.percentiles([50, 99])
    i50, = inf_w.percentiles([50])
    return {"max_batch": max_batch, "fps_total": sum(after[k] - before[k] for k in after) / (t1 - t0),
            "latency_p50_ms": p50 * 1000, "latency_p99_ms": p99 * 1000, "inference_p50_ms_per_batch": i50 * 1000,
            "batches_by_frames": hist}


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def glass_to_glass(n: int, size: str, fps: float, mode: str, seconds: float) -> dict:
    srv = server(n, size, fps, max_batch=max(1, n), stamp=True, max_wait_ms=10.0)
    driver = chromium()
    try:
        wait_frames(srv, 3)
        driver.get(srv.url + f"view/s0?g2g=1&mode={mode}")
        time.sleep(2.0 + seconds)
        got_mode = driver.execute_script("return window.viewer.mode")
        lags = driver.execute_script("return window.viewer.g2g") or []
        inf = srv.batcher.inference.percentiles([50])[0]
    finally:
        driver.quit()
        srv.stop()
    lags = lags[len(lags) // 5:]  # the first fifth: the connection settling
    return {"streams": n, "mode": got_mode, "samples": len(lags),
            "g2g_p50_ms": float(np.percentile(lags, 50)) if lags else None,
            "g2g_p99_ms": float(np.percentile(lags, 99)) if lags else None,
            "inference_p50_ms_per_batch": inf * 1000 if inf else None}


def scrape(n: int = 16, rounds: int = 50) -> dict:
    srv = server(n, "64x128", 2.0, max_batch=4)
    try:
        wait_frames(srv, 2)
        times, text = [], b""
        for _ in range(rounds):
            t0 = time.perf_counter()
            with urllib.request.urlopen(srv.url + "metrics", timeout=30) as r:
                text = r.read()
            times.append(time.perf_counter() - t0)
    finally:
        srv.stop()
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    return {"streams": n, "scrape_ms_median": statistics.median(times) * 1000, "series": series,
            "series_limit": 60 + 30 * n, "bytes": len(text)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--fps", type=float, default=30.0, help="each stream's frame rate (above what the CPU keeps up "
                                                             "with: the servers are measured at their limit)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2, help="alternating batched / batch-1 rounds")
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-browser", action="store_true")
    a = ap.parse_args()
    import torch

    out: dict = {"machine": {"cpu": _cpu(), "cores": torch.get_num_threads(), "python": platform.python_version(),
                             "torch": torch.__version__},
                 "command": " ".join(sys.argv), "batching": [], "glass_to_glass": []}
    for _ in range(a.rounds):
        for mb in (a.streams, 1):
            r = batching_round(a.streams, a.size, a.fps, mb, a.seconds)
            print(json.dumps(r), flush=True)
            out["batching"].append(r)
    if not a.skip_browser:
        for n in (1, a.streams):
            for mode in ("webrtc", "mjpeg"):
                r = glass_to_glass(n, a.size, 10.0, mode, a.seconds)
                print(json.dumps(r), flush=True)
                out["glass_to_glass"].append(r)
    out["scrape"] = scrape()
    print(json.dumps(out["scrape"]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
