"""`bench`: model-only sweeps, and the whole pipeline against model-only in the same run."""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ..benchmark.model_only import BENCH_BACKENDS, MODES
from ..errors import UserError
from ..pipeline.config import MAX_BATCH
from ..runtime.device import PRECISION_CHOICES
from ..runtime.paths import STDOUT
from ..runtime.settings import check_config, setting
from ..runtime.sizes import MAX_SIDE


BENCH_PRECISIONS = tuple(p for p in PRECISION_CHOICES if p != "auto")
REFERENCES = ("transformers",)
G_MODEL, G_PIPE = "model only", "whole pipeline (--source)"


@dataclass
class BenchConfig:
    """Model only: every combination of sizes x batches x precisions x modes (torch) or backends. With
    ``source``: the whole pipeline on it, then the model alone at the input size the pipeline used."""

    weights: str | None = setting(None, help="checkpoint", default_text="a random model of --variant")
    variant: str = setting("b0", help="b0..b5 when no --weights")
    sizes: tuple[tuple[int, int], ...] | None = setting(None, size=MAX_SIDE, commas=True, metavar="HxW,...",
                                                        group=G_MODEL, default_text="--input-size, else 512x1024",
                                                        help="comma-separated input sizes")
    batch: tuple[int, ...] = setting((1,), low=1, high=MAX_BATCH, commas=True, aliases=("--batch-size",),
                                     group=G_MODEL, help="comma-separated batch sizes")
    precision: tuple[str, ...] = setting(("fp32",), choices=BENCH_PRECISIONS, commas=True, group=G_MODEL,
                                         help="comma-separated precisions")
    mode: tuple[str, ...] = setting(("folded",), choices=MODES, commas=True, group=G_MODEL,
                                    help="comma-separated torch modes")
    warmup: int = setting(5, low=0, high=10_000, help="untimed calls first")
    iters: int = setting(30, low=1, high=100_000, help="timed calls")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N")
    threads: int | None = setting(None, low=1, high=1024, default_text="every core",
                                  help="CPU threads for torch, and for OpenVINO and ONNX Runtime in the model-only "
                                       "sweep")
    source: str | None = setting(None, group=G_PIPE, help="measure the whole pipeline on this source instead")
    sink: str = setting("null", choices=("null", "mp4"), group=G_PIPE, help="pipeline output")
    input_size: tuple[int, int] | None = setting(None, size=MAX_SIDE, metavar="HxW", group=G_PIPE,
                                                 help="pipeline model input box (model only: the size when no "
                                                      "--sizes)")
    pipeline_batch: int | None = setting(None, low=1, high=MAX_BATCH, group=G_PIPE, help="pipeline batch size")
    pipeline_precision: str | None = setting(None, choices=PRECISION_CHOICES, group=G_PIPE,
                                             help="pipeline precision")
    max_frames: int | None = setting(None, low=1, group=G_PIPE, help="pipeline: stop after N frames")
    repeat: int = setting(1, low=1, high=1000, metavar="N", group=G_PIPE,
                          help="rounds of (pipeline, model only); the round with the median ratio is reported "
                               "(steadier on machines whose speed drifts)")
    json: str | None = setting(None, metavar="PATH", help="write all results as JSON")
    overwrite: bool = setting(False, help="replace outputs that already exist (an input is never written)")
    backend: tuple[str, ...] = setting(("torch",), choices=BENCH_BACKENDS, commas=True,
                                       help="comma-separated backends (model only: a sweep; exported backends run "
                                            "their own compiled graph, --mode applies to torch; with --source: the "
                                            "one backend of the pipeline and of the model alone)")
    compare: tuple[str, ...] = setting((), choices=REFERENCES, commas=True,
                                       help="'transformers': also time Hugging Face's single-head "
                                            "SegformerForSemanticSegmentation of the same variant (random weights) "
                                            "and print the ratio: each side timed in a fresh process, "
                                            "alternating, --rounds times; the median ratio and its range")
    rounds: int = setting(3, low=1, high=100, help="--compare: rounds of (ours, reference), each measurement in its "
                                                   "own process, their order alternating")
    reference_only: bool = setting(False, help="time only the --compare reference at --sizes x --batch (what each "
                                               "of the comparison's reference processes runs)")


def _model(cfg: BenchConfig):
    from ..model import build_model, load_model

    if cfg.weights:
        return load_model(cfg.weights), cfg.weights
    import torch

    torch.manual_seed(0)  # the same random model in every run, so that runs compare (fidelity too)
    try:
        return build_model(cfg.variant), f"{cfg.variant} (random weights, seed 0)"
    except ValueError as e:
        raise UserError(str(e)) from None


def _table(rows: list[dict], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    ratios = any("vs_transformers" in r for r in rows)
    for c in ("backend", "size", "batch", "precision", "mode", "p50 ms", "p95 ms", "p99 ms", "FPS", "start-up s",
              "GPU MB", "fidelity vs torch fp32") + (("vs HF",) if ratios else ()):
        t.add_column(c, justify="right")
    for r in rows:
        lat = r["latency_ms"]
        fid = r.get("fidelity")
        fid_s = (f"argmax {fid['argmax_agreement'] * 100:.2f}%" +
                 (f", depth {fid['depth_rel_diff_mean'] * 100:.2f}%" if "depth_rel_diff_mean" in fid else "") +
                 (f", max {fid['max_abs_diff']:.0e}" if "max_abs_diff" in fid else "")
                 ) if fid else "-"
        t.add_row(r.get("backend", "torch"), r["size"], str(r["batch"]), r["precision"], r["mode"],
                  f"{lat['p50']:.2f}", f"{lat['p95']:.2f}", f"{lat['p99']:.2f}", f"{r['throughput_fps']:.1f}",
                  f"{r['startup_s']:.2f}" if r.get("startup_s") is not None else "-",
                  f"{r['peak_gpu_mem_mb']:.0f}" if r["peak_gpu_mem_mb"] else "-", fid_s,
                  *((f"{r['vs_transformers']:.2f}x" if "vs_transformers" in r else "-",) if ratios else ()))
    return t


def _line(r: dict) -> str:
    """One finished case, as it is printed while the sweep goes on."""
    note = f" ({r['precision_note']})" if r.get("precision_note") else ""
    return (f"  {r['backend']} {r['size']} b{r['batch']} {r['precision']} {r['mode']}: p50 "
            f"{r['latency_ms']['p50']:.2f} ms, {r['throughput_fps']:.1f} FPS, start-up {r['startup_s']:.2f} s{note}")


def _cases(cfg: BenchConfig, device) -> tuple[list, dict[str, str]]:
    """The model-only cases, backend by backend, and the backend/precision pairs that cannot run here (skipped,
    each with its reason)."""
    from ..benchmark.model_only import BenchCase
    from ..runtime.backends import BACKEND_PRECISIONS, resolve_backend

    cases, skipped = [], {}
    for backend in cfg.backend:
        if backend != "torch":
            resolve_backend(backend, None, device)  # a backend that cannot run on this device: one line
        for size, batch, precision in itertools.product(_sizes(cfg), cfg.batch, cfg.precision):
            if backend == "torch":
                cases += [BenchCase(size, batch, precision, m) for m in cfg.mode]
            elif precision not in BACKEND_PRECISIONS[backend]:
                skipped[f"{backend} {precision}"] = "that backend does not compute in that precision"
            elif backend == "openvino" and precision == "bf16" and not _cpu_has_bf16():
                # it would run fp32 under a bf16 label: a second fp32 row, not a bf16 figure
                skipped[f"{backend} {precision}"] = "this CPU has no bf16 (OpenVINO's CPU capabilities lack BF16)"
            else:
                cases.append(BenchCase(size, batch, precision, "-", backend))
    return cases, skipped


def _sizes(cfg: BenchConfig) -> tuple[tuple[int, int], ...]:
    return cfg.sizes or ((cfg.input_size,) if cfg.input_size else ((512, 1024),))


def _cpu_has_bf16() -> bool:
    from ..runtime.backends.openvino import has_bf16

    return has_bf16()


def _compare_transformers(cfg: BenchConfig, rows: list[dict], console: Console) -> list[dict]:
    """Hugging Face's single-head model against each row, fairly: every measurement (each row's case, and the
    reference at its shape) in a fresh process with no other thread pool alive, ``cfg.rounds`` rounds whose order
    alternates (ours first, then the reference first); each row gets the median of its rounds' ratios and their
    range. The reference rows are the median round's."""
    shapes = list(dict.fromkeys((r["size"], r["batch"]) for r in rows))
    ref_runs: dict[tuple, list[dict]] = {k: [] for k in shapes}
    ours_runs: list[list[dict]] = [[] for _ in rows]
    for i in range(cfg.rounds):
        jobs = [("ours", j) for j in range(len(rows))] + [("ref", k) for k in shapes]
        for kind, key in (jobs if i % 2 == 0 else jobs[::-1]):
            if kind == "ours":
                r = rows[key]
                out = _fresh_process(cfg, r["size"], r["batch"], ["--precision", r["precision"], "--backend",
                                     r.get("backend", "torch"), "--mode", r["mode"] if r["mode"] != "-" else "folded"])
                ours_runs[key].append(out["model"][0])
            else:
                out = _fresh_process(cfg, key[0], key[1], ["--reference-only"])
                ref_runs[key].append(out["transformers"][0])
    for r, runs in zip(rows, ours_runs):
        refs = ref_runs[(r["size"], r["batch"])]
        per_round = [{"ours_p50_ms": o["latency_ms"]["p50"], "reference_p50_ms": h["latency_ms"]["p50"],
                      "ratio": h["latency_ms"]["p50"] / o["latency_ms"]["p50"], "pids": [o["pid"], h["pid"]]}
                     for o, h in zip(runs, refs)]
        ratios = sorted(x["ratio"] for x in per_round)
        r["vs_transformers"] = float(np.median(ratios))
        r["vs_transformers_range"] = [ratios[0], ratios[-1]]
        r["vs_transformers_rounds"] = per_round
    ref = []
    for key, runs in ref_runs.items():
        med = sorted(runs, key=lambda h: h["latency_ms"]["p50"])[(len(runs) - 1) // 2]
        ref.append({**med, "rounds_p50_ms": [h["latency_ms"]["p50"] for h in runs]})
        lat = med["latency_ms"]
        console.print(f"reference: {med['model']}, {med['size']} b{med['batch']} fp32: median of {len(runs)} fresh "
                      f"processes p50 {lat['p50']:.2f} ms", highlight=False)
        for r in rows:
            if (r["size"], r["batch"]) == key:
                lo, hi = r["vs_transformers_range"]
                console.print(f"  ours, {r.get('backend', 'torch')} {r['precision']} {r['mode']}: [bold]"
                              f"{r['vs_transformers']:.2f}x[/] the reference's speed (median of {len(runs)} "
                              f"alternating rounds, each side in its own process; range {lo:.2f}-{hi:.2f}x)",
                              highlight=False)
    return ref


def _fresh_process(cfg: BenchConfig, size: str, batch: int, extra: list[str]) -> dict[str, Any]:
    """One measurement by `bench` in a process of its own (its JSON on standard output)."""
    import json
    import subprocess
    import sys

    args = [sys.executable, "-m", "segformer3d_rt", "bench", "--sizes", size, "--batch", str(batch),
            "--warmup", str(cfg.warmup), "--iters", str(cfg.iters), "--device", cfg.device, "--json", "-", *extra]
    args += ["--weights", cfg.weights] if cfg.weights else ["--variant", cfg.variant]
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"a comparison process failed: {last}")
    return json.loads(r.stdout)


def run_bench(cfg: BenchConfig) -> int:
    import torch

    from ..benchmark.model_only import bench_model, environment
    from ..runtime.device import resolve_device
    from ..runtime.paths import check_json_output, write_json

    check_config(cfg)
    if cfg.json:  # before the measuring, not after it
        given = [("weights", cfg.weights), ("source", cfg.source)]
        check_json_output(cfg.json, "bench JSON", [(w, p) for w, p in given if p], overwrite=cfg.overwrite)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    to_stderr = cfg.json == STDOUT  # the JSON has standard output: the tables go beside the logs
    console = Console(stderr=to_stderr)
    if not console.is_terminal:  # logs and pipes: rich would squeeze the ten-column table into 80 characters
        console = Console(width=160, stderr=to_stderr)
    env = environment(device)
    report: dict[str, Any] = {"environment": env}
    model, weights = _model(cfg)
    report["weights"] = weights
    console.print(f"[bold]device[/] {env['device']} {env.get('gpu', env['cpu'])}, torch {env['torch']}, "
                  f"{env['threads']} CPU threads", highlight=False)

    if cfg.source:
        if len(cfg.backend) != 1:
            raise UserError("--source measures the pipeline with one backend; give one --backend")
        report["pipeline"] = _bench_pipeline(cfg, model, device, console)
    else:
        import tempfile

        if cfg.reference_only:  # one side of a fair comparison, in its own process
            from ..benchmark.model_only import bench_transformers

            report["transformers"] = bench_transformers(model, device, [(sz, b) for sz in _sizes(cfg)
                                                                        for b in cfg.batch], cfg.warmup, cfg.iters)
            for row in report["transformers"]:
                row["pid"] = os.getpid()
            write_json(cfg.json, report, "bench JSON") if cfg.json else None
            return 0
        cases, skipped = _cases(cfg, device)
        for s, why in skipped.items():
            console.print(f"  skipped {s}: {why}", highlight=False)
        # a fresh compile cache: each backend's first start-up is a cold one, later cases reuse what it compiled
        with tempfile.TemporaryDirectory(prefix="segformer3d-rt-bench-") as root:
            rows = bench_model(model, device, cases, cfg.warmup, cfg.iters, cache_root=Path(root),
                               threads=cfg.threads, on_result=lambda r: console.print(_line(r), highlight=False))
        for row in rows:
            row["pid"] = os.getpid()
        report["model"] = rows
        report["skipped"] = list(skipped)
        if "transformers" in cfg.compare and rows:
            report["transformers"] = _compare_transformers(cfg, rows, console)
        console.print(_table(rows, f"model only: {weights} (start-up: building the forward and its first call; "
                                   "each backend's first is cold)"))
    if cfg.json:
        write_json(cfg.json, report, "bench JSON")
    return 0


def _bench_pipeline(cfg: BenchConfig, model, device, console: Console) -> dict[str, Any]:
    """Rounds of (the pipeline on a source, then the network alone at the input size the pipeline used);
    the round whose ratio is the median is the one reported."""
    if cfg.repeat < 1:
        raise UserError("--repeat must be at least 1")
    rounds = []
    for i in range(cfg.repeat):
        r = _pipeline_round(cfg, model, device)
        rounds.append(r)
        if cfg.repeat > 1:
            console.print(f"  round {i + 1}/{cfg.repeat}: pipeline {r['report']['throughput_fps']:.2f} FPS, "
                          f"model only {r['model_only']['throughput_fps']:.2f} FPS, ratio {_pct(r['ratio'])}",
                          highlight=False)
    median = sorted(rounds, key=lambda r: r["ratio"] or 0.0)[(len(rounds) - 1) // 2]
    _print_round(cfg, median, console)
    if cfg.repeat > 1:
        ratios = ", ".join(_pct(r["ratio"]) for r in rounds)
        console.print(f"ratios of the {len(rounds)} rounds: {ratios}; reported: the median round", highlight=False)
    return {**median, "rounds": [{"ratio": r["ratio"], "pipeline_fps": r["report"]["throughput_fps"],
                                  "model_only_fps": r["model_only"]["throughput_fps"]} for r in rounds]}


def _pct(ratio: float | None) -> str:
    return f"{ratio * 100:.1f}%" if ratio else "n/a"


def _pipeline_round(cfg: BenchConfig, model, device) -> dict[str, Any]:
    import tempfile

    from ..benchmark.model_only import BenchCase, bench_model
    from ..pipeline.config import build_config
    from ..pipeline.session import execute
    from ._signals import Signals

    with tempfile.TemporaryDirectory() as tmp:
        outputs = [str(Path(tmp) / "bench.mp4")] if cfg.sink == "mp4" else []
        run_cfg = build_config("benchmark", {
            "source": cfg.source, "weights": cfg.weights, "outputs": outputs, "device": cfg.device,
            "backend": cfg.backend[0],
            "precision": cfg.pipeline_precision, "input_size": cfg.input_size,
            "batch_size": cfg.pipeline_batch, "max_frames": cfg.max_frames, "progress": "none",
        })
        if not cfg.weights:
            # a random model of the chosen variant, through the same pipeline
            from ..model import save_checkpoint
            run_cfg.weights = str(save_checkpoint(model, Path(tmp) / "bench.safetensors"))
        code, report = execute(run_cfg, interrupts=Signals)
    if report["error"]:
        raise UserError(f"pipeline failed: {report['error']}")
    sizes = report["model"]["input_sizes"]
    h, w = (int(v) for v in sizes[0].strip("()").split(","))
    backend = report["model"].get("backend", "torch")  # the model alone through the pipeline's backend
    case = BenchCase((h, w), report["model"]["batch_size"], report["model"]["precision"],
                     "folded" if backend == "torch" else "-", backend)
    rows = bench_model(model, device, [case], cfg.warmup, cfg.iters, check_fidelity=False)
    model_fps = rows[0]["throughput_fps"]
    pipe_fps = report["throughput_fps"]
    ratio = pipe_fps / model_fps if (pipe_fps and model_fps) else None
    return {"report": report, "model_only": rows[0], "ratio": ratio, "exit_code": code}


def _print_round(cfg: BenchConfig, r: dict[str, Any], console: Console) -> None:
    report, model_only, ratio = r["report"], r["model_only"], r["ratio"]
    t = Table(title=f"pipeline vs model only ({cfg.source}, input {model_only['size']}, batch "
                    f"{model_only['batch']}, {model_only['precision']})", title_justify="left")
    for c in ("what", "FPS", "p50 ms", "p99 ms"):
        t.add_column(c, justify="right")
    e2e = report["latency_ms"]["capture_to_output"]
    t.add_row("pipeline (capture→output)", f"{report['throughput_fps']:.2f}", f"{e2e['p50']:.1f}", f"{e2e['p99']:.1f}")
    for name, st in report["latency_ms"]["stages"].items():
        t.add_row(f"  stage {name}", f"{1000.0 / st['p50']:.1f}" if st["p50"] else "-", f"{st['p50']:.2f}",
                  f"{st['p99']:.2f}")
    lat = model_only["latency_ms"]
    t.add_row("model only (same run)", f"{model_only['throughput_fps']:.2f}", f"{lat['p50']:.2f}", f"{lat['p99']:.2f}")
    console.print(t)
    console.print(f"pipeline / model-only throughput: [bold]{_pct(ratio)}[/]", highlight=False)
