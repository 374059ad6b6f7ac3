"""The model-only benchmark core of `segformer3d-rt bench` (the command, and the whole-pipeline comparison,
are in ``commands/bench.py``), CPU or GPU.

Model-only: every combination of input size x batch x precision x mode (torch) or backend (OpenVINO, ONNX
Runtime, TensorRT: their own compiled graph), after warm-up; GPU work is timed with CUDA events, CPU work with
perf_counter. Start-up (building the forward: folding, export, compile; and the first call) is its own figure.
Fidelity against torch fp32 on the same input is reported beside the speed (argmax agreement, depth relative
difference; max |diff| for the backends).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError
from ..model import SegFormer3D, SegFormerOutput
from ..pipeline.stats import summarise
from ..runtime.backends import BACKEND_PRECISIONS, BACKENDS
from ..runtime.backends.fidelity import Fidelity, check_input, compare
from ..runtime.backends.torch_model import TorchNetwork
from ..runtime.cuda_graph import CudaGraphRunner
from ..runtime.device import on_device

MODES = ("eager", "folded", "compile", "cudagraph")
BENCH_BACKENDS = tuple(b for b in BACKENDS if b != "auto")  # a sweep names each backend it times


@dataclass
class BenchCase:
    size: tuple[int, int]
    batch: int
    precision: str  # fp32 | fp16 | bf16
    mode: str  # eager | folded | compile | cudagraph ("-" for the exported backends)
    backend: str = "torch"  # torch | openvino | onnxruntime | tensorrt


def make_forward(model: SegFormer3D, device: torch.device, precision: str, mode: str,
                 example: torch.Tensor) -> Callable[[torch.Tensor], SegFormerOutput]:
    """The torch network of a bench mode: eager (heads as trained), folded (the pipeline's), compiled, or a CUDA
    graph of the folded network."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError("fp16 needs CUDA; use fp32 or bf16 on CPU")
    if mode not in MODES:
        raise UserError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    net = TorchNetwork(model, device, precision, fold_heads=mode != "eager")
    if mode in ("eager", "folded"):
        return net
    if mode == "compile":
        return torch.compile(net.__call__, mode="reduce-overhead" if device.type == "cuda" else "default")
    if device.type != "cuda":
        raise UserError("mode cudagraph needs a CUDA device")
    # captured like the timed runs replay it: in inference mode, so that the graph records no autograd
    # state (saved activations, grad-requiring outputs) and its memory is that of inference alone
    with torch.inference_mode(), on_device(example.device):
        return CudaGraphRunner(net, example)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_forward(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device, warmup: int,
                 iters: int) -> list[float]:
    """Seconds per call: CUDA events on GPU (after warm-up), perf_counter on CPU. The events are recorded on
    ``device``'s current stream (not the current device's: 'cuda:1' is timed on GPU 1)."""
    with on_device(device):
        return _time_forward(fn, x, device, warmup, iters)


def _time_forward(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device, warmup: int,
                  iters: int) -> list[float]:
    for _ in range(warmup):
        fn(x)
    _sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            stream = torch.cuda.current_stream(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn(x)
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return times


def fidelity_row(fid: Fidelity) -> dict[str, float]:
    """What a bench row says of a run against torch fp32 on the same input."""
    out = {"argmax_agreement": fid.argmax_agreement, "max_abs_diff": max(fid.max_abs_seg, fid.max_abs_depth or 0.0)}
    if fid.depth_rel is not None:
        out["depth_rel_diff_mean"] = fid.depth_rel
        out["depth_rel_diff_p99"] = fid.depth_rel_p99
    return out


@torch.inference_mode()
def fidelity(model: SegFormer3D, device: torch.device, fn: Callable, x: torch.Tensor) -> dict[str, float]:
    """A case's forward (a reduced precision, or an exported backend) against torch fp32, folded, on ``x``."""
    return fidelity_row(compare(make_forward(model, device, "fp32", "folded", x)(x), fn(x), model.meta))


def _open(model: SegFormer3D, device: torch.device, case: BenchCase, x: torch.Tensor,
          root: Any, threads: int | None) -> tuple[Callable[[torch.Tensor], Any], dict[str, Any]]:
    """The case's forward and what to report about it beyond speed."""
    if case.backend == "torch":
        return make_forward(model, device, case.precision, case.mode, x), {}
    from ..runtime.backends import open_backend

    backend = open_backend(case.backend, model, device, case.precision, case.size, root, threads, case.batch)
    return backend, {"precision": backend.precision, "precision_note": backend.note,
                     "backend_startup_s": backend.startup_s}


def bench_model(model: SegFormer3D, device: torch.device, cases: list[BenchCase], warmup: int, iters: int,
                check_fidelity: bool = True, on_result: Callable[[dict], None] | None = None,
                cache_root: Any = None, threads: int | None = None) -> list[dict]:
    """One row per case. ``startup_s``: from building the forward (folding; export and compile for the
    backends, in ``cache_root``) to the end of its first call, which is the first warm-up iteration.
    ``threads``: the CPU threads of the exported backends (None: every core), as torch's for a fair run."""
    results = []
    for case in cases:
        h, w = case.size
        x = check_input(model.meta, (h, w), case.batch).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        fn, extra = _open(model, device, case, x, cache_root, threads)
        with torch.inference_mode(), on_device(device):
            fn(x)
            _sync(device)
        startup = time.perf_counter() - t0
        times = time_forward(fn, x, device, max(warmup - 1, 0), iters)
        s = summarise(times)
        med = float(np.median(times))
        r: dict[str, Any] = {
            "size": f"{h}x{w}", "batch": case.batch, "precision": case.precision, "mode": case.mode,
            "backend": case.backend, "startup_s": startup,
            "latency_ms": s, "throughput_fps": case.batch / med if med > 0 else None,
            "peak_gpu_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
            **extra,
        }
        if check_fidelity and (case.backend != "torch" or case.precision != "fp32"):
            r["fidelity"] = fidelity(model, device, fn, x)
        results.append(r)
        if on_result:
            on_result(r)
    return results


def bench_transformers(model: SegFormer3D, device: torch.device, shapes: list[tuple[tuple[int, int], int]],
                       warmup: int, iters: int) -> list[dict]:
    """Hugging Face's single-head SegformerForSemanticSegmentation of the same variant, fp32, timed exactly as
    the rows of :func:`bench_model` (same input, warm-up and iterations) at each (size, batch)."""
    from .transformers_ref import hf_forward, hf_segformer

    hf, version = hf_segformer(model.meta)
    rows = []
    for (h, w), batch in shapes:
        x = check_input(model.meta, (h, w), batch).to(device)
        t0 = time.perf_counter()
        fn = hf_forward(hf, device, "fp32")
        with torch.inference_mode(), on_device(device):
            fn(x)
            _sync(device)
        startup = time.perf_counter() - t0
        times = time_forward(fn, x, device, max(warmup - 1, 0), iters)
        med = float(np.median(times))
        rows.append({"size": f"{h}x{w}", "batch": batch, "precision": "fp32", "model": "transformers "
                     f"{version} SegformerForSemanticSegmentation {model.meta.variant} (single head, random weights)",
                     "startup_s": startup, "latency_ms": summarise(times),
                     "throughput_fps": batch / med if med > 0 else None})
    return rows


def environment(device: torch.device) -> dict[str, Any]:
    import platform

    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "device": str(device)}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("openvino", "onnxruntime", "tensorrt", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            env[pkg] = version(pkg)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_mem_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            import subprocess
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
    return env
