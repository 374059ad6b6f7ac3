#!/usr/bin/env python3
"""Benchmarks of `fleet` for BENCHMARKS.md (figures, not tests): the same clips through 1 and 2 workers (each
single-threaded, --cpus-per-worker 1) on a local Ray cluster, alternating; scaling efficiency, each worker's
start-up (its actor and compiled network), the per-video overhead beyond the frames, and the bytes a video's
result row costs the object store (for a short and a long clip: independent of length).

    python scripts/fleet_bench.py --clips 6 --frames 150 --size 256x512 --json fleet_bench.json
"""
from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segformer3d_rt.pipeline.sources import open_source  # noqa: E402


def make_clip(path: Path, frames: int, seed: int, size: str) -> None:
    h, w = (int(v) for v in size.split("x"))
    with open_source(f"synthetic:seed={seed},size={size},fps=25,frames={frames}") as src, av.open(str(path), "w") as o:
        s = o.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in src.frames():
            for p in s.encode(av.VideoFrame.from_ndarray(f.image, format="rgb24")):
                o.mux(p)
        for p in s.encode():
            o.mux(p)


def fleet(src: Path, out: Path, workers: int, size: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segformer3d_rt", "fleet", str(src), "-o", str(out), "--workers",
                    str(workers), "--cpus-per-worker", "1", "--input-size", size, "--progress", "none"], check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "fleet-summary.json").read_text())
    rows = summary["videos"]
    startup = max(w["startup_s"] for w in summary["workers"])
    return {"workers": workers, "wall_s": wall, "fleet_s": summary["totals"]["processing_s"],
            "cluster_start_s": summary["totals"]["startup_s"], "worker_startup_s": startup,
            "frames": summary["totals"]["frames_out"],
            "video_s": [r["seconds"] for r in rows], "video_fps": [r["throughput_fps"] for r in rows],
            "row_bytes": [len(pickle.dumps(r)) for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out: dict = {"command": " ".join(sys.argv), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        src.mkdir()
        for i in range(a.clips):
            make_clip(src / f"c{i}.mp4", a.frames, i, a.size)
        for r in range(a.rounds):
            for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                res = fleet(src, tmp / f"out-{r}-{n}", n, a.size)
                print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}), flush=True)
                out["runs"].append(res)
        short = tmp / "short"
        short.mkdir()
        make_clip(short / "s.mp4", 10, 0, a.size)
        one = fleet(short, tmp / "out-short", 1, a.size)
    by = {n: sorted(x["fleet_s"] for x in out["runs"] if x["workers"] == n) for n in (1, 2)}
    t1, t2 = by[1][len(by[1]) // 2], by[2][len(by[2]) // 2]
    out["scaling_efficiency"] = t1 / (2 * t2)
    out["row_bytes"] = {"short_10_frames": one["row_bytes"][0], f"long_{a.frames}_frames": out["runs"][0]["row_bytes"][0]}
    print(json.dumps({"scaling_efficiency": out["scaling_efficiency"], "median_fleet_s": {"1": t1, "2": t2},
                      "row_bytes": out["row_bytes"]}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
