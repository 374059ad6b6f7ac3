#!/usr/bin/env python3
"""x264 presets on the annotated 720p dashcam frames, for the choice of `run`'s file default (BENCHMARKS.md):
CPU milliseconds per frame (the encoder's threads included) and file size at the same crf, and quality (PSNR,
SSIM against the rendered frames) at the same file size (each preset given the bitrate medium's crf file has).

    python scripts/x264_presets.py --clip ../shared/data/videos/project_video_short_1280x720.mp4 --json x264.json

The rendered frames are `run`'s own output (``run CLIP -o DIR/``, PNG, lossless), so what is measured is what a
user's file run encodes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def rendered_frames(clip: str, n: int, input_size: str, folder: Path) -> list[np.ndarray]:
    subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", clip, "-o", str(folder), "--max-frames", str(n),
                    "--input-size", input_size, "--progress", "none"], check=True)
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob("*.png"))]


def encode(frames: list[np.ndarray], path: Path, fps: int, preset: str, crf: int | None = None,
           bitrate: int | None = None) -> dict:
    cpu0, t0 = time.process_time(), time.perf_counter()
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p"
        s.time_base = Fraction(1, fps)
        opts = {"preset": preset}
        if crf is not None:
            opts["crf"] = str(crf)
        else:
            s.bit_rate = bitrate
        s.options = opts
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"cpu_ms_per_frame": cpu * 1000 / len(frames), "wall_ms_per_frame": wall * 1000 / len(frames),
            "bytes": path.stat().st_size}


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two grey images (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    m = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(m.mean())


def quality(path: Path, frames: list[np.ndarray]) -> dict:
    psnr, ss = [], []
    with av.open(str(path)) as f:
        for ref, got in zip(frames, (x.to_ndarray(format="rgb24") for x in f.decode(video=0))):
            mse = float(np.mean((ref.astype(np.float64) - got) ** 2))
            psnr.append(10 * np.log10(255 ** 2 / max(mse, 1e-12)))
            ss.append(ssim(cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY), cv2.cvtColor(got, cv2.COLOR_RGB2GRAY)))
    return {"psnr_db": float(np.mean(psnr)), "ssim": float(np.mean(ss))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", required=True)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--input-size", default="256x512")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    with av.open(a.clip) as c:
        fps = round(float(c.streams.video[0].average_rate or 25))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = rendered_frames(a.clip, a.frames, a.input_size, tmp / "frames")
        medium = encode(frames, tmp / "medium.mp4", fps, "medium", crf=a.crf)
        bitrate = int(medium["bytes"] * 8 * fps / len(frames))
        for preset in PRESETS:
            same_crf = encode(frames, tmp / f"{preset}.mp4", fps, preset, crf=a.crf)
            same_size = encode(frames, tmp / f"{preset}-abr.mp4", fps, preset, bitrate=bitrate)
            row = {"preset": preset, "crf": a.crf, **same_crf, "size_vs_medium": same_crf["bytes"] / medium["bytes"],
                   "at_medium_size": {**same_size, **quality(tmp / f"{preset}-abr.mp4", frames)}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {"clip": a.clip, "frames": len(frames), "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
           "bitrate_of_medium_crf": bitrate, "rows": rows, "command": " ".join(sys.argv)}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
