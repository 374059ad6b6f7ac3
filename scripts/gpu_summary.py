"""Issue 23's targets, read from the JSON files scripts/gpu_check.sh collected: summary.json and summary.txt.

Each target gets its figure, the file it came from and met / not met; a result that is missing is named as missing
(never guessed). With --dry-run (CPU, tiny sizes) the same arithmetic runs, and every line says it is no GPU figure.
Exit status 0 when the files could be read (a missed target is a result, not a failure of this step).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FPS_TARGETS = {"1024x2048": 250.0, "512x1024": 1000.0}  # model only, B0, batch 1, fp16, CUDA graphs
DRY_SIZES = {"64x128": "1024x2048", "32x64": "512x1024"}  # what the dry run's tiny sizes stand for
MIN_ARGMAX = 0.995  # fp16 against fp32
MAX_DEPTH_REL = 0.01
FILE_SHARE = 0.90  # file throughput against the slowest stage alone
LIVE_FPS = 30.0


def load(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def target(name: str, figure: str, met: bool | None, source: str) -> dict[str, Any]:
    return {"target": name, "figure": figure, "met": met, "from": source}


def model_targets(bench: dict | None, sizes: dict[str, str]) -> list[dict]:
    if bench is None:
        return [target("model only FPS", "missing (bench_model.json)", None, "bench_model.json")]
    out = []
    rows = bench.get("model", [])
    for size, want in FPS_TARGETS.items():
        run_size = next((s for s, stands in sizes.items() if stands == size), size)
        cands = [r for r in rows if r["size"] == run_size and r["batch"] == 1 and r["backend"] == "torch"]
        fp16 = [r for r in cands if r["precision"] == "fp16"] or cands  # the dry run has fp32 only
        if not fp16:
            out.append(target(f"model only >= {want:g} FPS at {size}", f"missing ({run_size} rows)", None,
                              "bench_model.json"))
            continue
        best = max(fp16, key=lambda r: r["throughput_fps"])
        out.append(target(f"model only >= {want:g} FPS at {size}",
                          f"{best['throughput_fps']:.1f} FPS ({best['precision']} {best['mode']}, {run_size}, "
                          f"p50 {best['latency_ms']['p50']:.2f} ms)", best["throughput_fps"] >= want,
                          "bench_model.json"))
        for r in fp16:
            fid = r.get("fidelity")
            if r["precision"] != "fp16" or not fid:
                continue
            rel = fid.get("depth_rel_diff_mean")
            ok = fid["argmax_agreement"] >= MIN_ARGMAX and (rel is None or rel <= MAX_DEPTH_REL)
            out.append(target(f"fp16 vs fp32 at {size} ({r['mode']}): argmax >= 99.5%, depth rel diff <= 1%",
                              f"argmax {fid['argmax_agreement'] * 100:.3f}%, depth rel diff mean "
                              f"{(rel or 0) * 100:.3f}% (p99 {(fid.get('depth_rel_diff_p99') or 0) * 100:.3f}%)",
                              ok, "bench_model.json"))
    return out


def backend_targets(bench: dict | None) -> list[dict]:
    if bench is None:
        return [target("TensorRT beside torch", "missing (bench_backends.json)", None, "bench_backends.json")]
    out = []
    for r in bench.get("model", []):
        out.append(target(f"{r['backend']} {r['precision']} at {r['size']} (figure only)",
                          f"{r['throughput_fps']:.1f} FPS, p50 {r['latency_ms']['p50']:.2f} ms", None,
                          "bench_backends.json"))
    for s in bench.get("skipped", []):
        out.append(target("skipped backend row", json.dumps(s)[:200], None, "bench_backends.json"))
    return out


def file_targets(run: dict | None, bench: dict | None) -> list[dict]:
    out = []
    if run is None:
        return [target("file: every frame kept, >= 90% of the slowest stage", "missing (run_file.json)", None,
                       "run_file.json")]
    frames = run["frames"]
    out.append(target("file: every frame kept", f"{frames['out']} of {frames['in']} out, {frames['dropped']} dropped",
                      frames["in"] == frames["out"] and frames["dropped"] == 0 and not run.get("error"),
                      "run_file.json"))
    stages = run["latency_ms"]["stages"]
    batch = run.get("model", {}).get("batch_size") or 1
    # a stage alone could do 1000 / (its mean ms per frame) frames a second; the pipeline is as fast as its slowest.
    # Each frame of a batch records the whole batch's inference time: per frame it is that over the batch size.
    per_frame = {k: v["mean"] / (batch if k == "inference" else 1) for k, v in stages.items() if v["count"]}
    slowest = max(per_frame, key=per_frame.get)
    alone = 1000.0 / per_frame[slowest] if per_frame[slowest] else float("inf")
    share = run["throughput_fps"] / alone
    out.append(target("file: throughput >= 90% of the slowest stage alone",
                      f"{run['throughput_fps']:.1f} FPS against {slowest} alone {alone:.1f} FPS ({share * 100:.0f}%)",
                      share >= FILE_SHARE, "run_file.json"))
    if bench is not None and "pipeline" in bench:
        p = bench["pipeline"]
        out.append(target("file pipeline against the model alone (figure only)",
                          f"ratio {p.get('ratio', float('nan')):.2f} (model alone "
                          f"{p['model_only']['throughput_fps']:.1f} FPS at batch {p['model_only']['batch']})",
                          None, "bench_file.json"))
    return out


def live_targets(run: dict | None) -> list[dict]:
    if run is None:
        return [target("live 30 fps: p99 <= inference p99 + 2 frame intervals, no drops", "missing (run_live.json)",
                       None, "run_live.json")]
    lat = run["latency_ms"]
    e2e, inf = lat["capture_to_output"]["p99"], lat["stages"]["inference"]["p99"]
    bound = inf + 2 * 1000.0 / LIVE_FPS
    frames = run["frames"]
    return [target("live 30 fps: capture-to-output p99 <= inference p99 + two frame intervals",
                   f"p99 {e2e:.1f} ms against {inf:.1f} + {2000 / LIVE_FPS:.1f} = {bound:.1f} ms", e2e <= bound,
                   "run_live.json"),
            target("live 30 fps: no drops", f"{frames['dropped']} of {frames['in']} dropped",
                   frames["dropped"] == 0, "run_live.json")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: no figure is a GPU figure")
    args = ap.parse_args(argv)
    f = args.folder
    sizes = DRY_SIZES if args.dry_run else {s: s for s in FPS_TARGETS}
    rows = (model_targets(load(f, "bench_model.json"), sizes) + backend_targets(load(f, "bench_backends.json"))
            + file_targets(load(f, "run_file.json"), load(f, "bench_file.json")) + live_targets(load(f, "run_live.json")))
    versions = load(f, "versions.json") or {}
    summary = {"dry_run": args.dry_run, "device": versions.get("gpu") or "cpu", "versions": versions, "targets": rows}
    (f / "summary.json").write_text(json.dumps(summary, indent=1))
    mark = {True: "met", False: "NOT MET", None: "-"}
    head = ("DRY RUN on the CPU with tiny sizes: no figure below is a GPU figure" if args.dry_run
            else f"device: {summary['device']}; torch {versions.get('torch')}, CUDA {versions.get('cuda')}")
    lines = [head] + [f"[{mark[r['met']]:>7}] {r['target']}: {r['figure']}" for r in rows]
    (f / "summary.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
