"""`bench`: model-only sweeps, and the whole pipeline against model-only in the same run."""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import UserError


def _list(text: str, conv=str) -> list:
    return [conv(v.strip()) for v in text.split(",") if v.strip()]


def _model(args: argparse.Namespace):
    from ..model import build_model, load_model

    if args.weights:
        return load_model(args.weights), args.weights
    try:
        return build_model(args.variant), f"{args.variant} (random weights)"
    except ValueError as e:
        raise UserError(str(e)) from None


def _table(rows: list[dict], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for c in ("size", "batch", "precision", "mode", "p50 ms", "p95 ms", "p99 ms", "FPS", "GPU MB", "fidelity"):
        t.add_column(c, justify="right")
    for r in rows:
        lat = r["latency_ms"]
        fid = r.get("fidelity")
        fid_s = (f"argmax {fid['argmax_agreement'] * 100:.2f}%" +
                 (f", depth {fid['depth_rel_diff_mean'] * 100:.3f}%" if "depth_rel_diff_mean" in fid else "")
                 ) if fid else "-"
        t.add_row(r["size"], str(r["batch"]), r["precision"], r["mode"], f"{lat['p50']:.2f}", f"{lat['p95']:.2f}",
                  f"{lat['p99']:.2f}", f"{r['throughput_fps']:.1f}",
                  f"{r['peak_gpu_mem_mb']:.0f}" if r["peak_gpu_mem_mb"] else "-", fid_s)
    return t


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..bench import MODES, BenchCase, bench_model, environment
    from ..config import parse_size
    from ..pipeline.infer import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    if not console.is_terminal:  # logs and pipes: rich would squeeze the ten-column table into 80 characters
        console = Console(width=160)
    env = environment(device)
    report: dict[str, Any] = {"environment": env}
    model, weights = _model(args)
    report["weights"] = weights
    console.print(f"[bold]device[/] {env['device']} {env.get('gpu', env['cpu'])}, torch {env['torch']}, "
                  f"{env['threads']} CPU threads", highlight=False)

    if args.source:
        report["pipeline"] = _bench_pipeline(args, model, device, console)
    else:
        modes = _list(args.mode)
        for m in modes:
            if m not in MODES:
                raise UserError(f"unknown mode '{m}'; choose from {', '.join(MODES)}")
        cases = [BenchCase(parse_size(s), int(b), p, m) for s, b, p, m in itertools.product(
            _list(args.sizes), _list(args.batch), _list(args.precision), modes)]
        rows = bench_model(model, device, cases, args.warmup, args.iters,
                           on_result=lambda r: console.print(
                               f"  {r['size']} b{r['batch']} {r['precision']} {r['mode']}: "
                               f"p50 {r['latency_ms']['p50']:.2f} ms, {r['throughput_fps']:.1f} FPS",
                               highlight=False))
        report["model"] = rows
        console.print(_table(rows, f"model only: {weights}"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


def _bench_pipeline(args: argparse.Namespace, model, device, console: Console) -> dict[str, Any]:
    """Rounds of (the pipeline on a source, then the network alone at the input size the pipeline used);
    the round whose ratio is the median is the one reported."""
    if args.repeat < 1:
        raise UserError("--repeat must be at least 1")
    rounds = []
    for i in range(args.repeat):
        r = _pipeline_round(args, model, device)
        rounds.append(r)
        if args.repeat > 1:
            console.print(f"  round {i + 1}/{args.repeat}: pipeline {r['report']['throughput_fps']:.2f} FPS, "
                          f"model only {r['model_only']['throughput_fps']:.2f} FPS, ratio {_pct(r['ratio'])}",
                          highlight=False)
    median = sorted(rounds, key=lambda r: r["ratio"] or 0.0)[(len(rounds) - 1) // 2]
    _print_round(args, median, console)
    if args.repeat > 1:
        ratios = ", ".join(_pct(r["ratio"]) for r in rounds)
        console.print(f"ratios of the {len(rounds)} rounds: {ratios}; reported: the median round", highlight=False)
    return {**median, "rounds": [{"ratio": r["ratio"], "pipeline_fps": r["report"]["throughput_fps"],
                                  "model_only_fps": r["model_only"]["throughput_fps"]} for r in rounds]}


def _pct(ratio: float | None) -> str:
    return f"{ratio * 100:.1f}%" if ratio else "n/a"


def _pipeline_round(args: argparse.Namespace, model, device) -> dict[str, Any]:
    import tempfile

    from ..bench import BenchCase, bench_model
    from ..config import build_config, parse_size
    from ..pipeline.app import execute

    with tempfile.TemporaryDirectory() as tmp:
        outputs = [str(Path(tmp) / "bench.mp4")] if args.sink == "mp4" else []
        cfg = build_config("benchmark", {
            "source": args.source, "weights": args.weights, "outputs": outputs, "device": args.device,
            "precision": args.pipeline_precision,
            "input_size": parse_size(args.input_size) if args.input_size else None,
            "batch_size": args.pipeline_batch, "max_frames": args.max_frames, "progress": "none",
        })
        if not args.weights:
            # a random model of the chosen variant, through the same pipeline
            from ..model import save_checkpoint
            cfg.weights = str(save_checkpoint(model, Path(tmp) / "bench.safetensors"))
        code, report = execute(cfg)
    if report["error"]:
        raise UserError(f"pipeline failed: {report['error']}")
    sizes = report["model"]["input_sizes"]
    h, w = (int(v) for v in sizes[0].strip("()").split(","))
    rows = bench_model(model, device, [BenchCase((h, w), report["model"]["batch_size"], report["model"]["precision"],
                                                 "folded")], args.warmup, args.iters, check_fidelity=False)
    model_fps = rows[0]["throughput_fps"]
    pipe_fps = report["throughput_fps"]
    ratio = pipe_fps / model_fps if (pipe_fps and model_fps) else None
    return {"report": report, "model_only": rows[0], "ratio": ratio, "exit_code": code}


def _print_round(args: argparse.Namespace, r: dict[str, Any], console: Console) -> None:
    report, model_only, ratio = r["report"], r["model_only"], r["ratio"]
    t = Table(title=f"pipeline vs model only ({args.source}, input {model_only['size']}, batch "
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
