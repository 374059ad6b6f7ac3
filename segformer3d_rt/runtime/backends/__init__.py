"""Which engine runs the network: torch, or an exported-network backend (OpenVINO, ONNX Runtime, TensorRT).

``auto``: an .engine file -> TensorRT; an OpenVINO IR -> OpenVINO; on the CPU a checkpoint or an .onnx file ->
OpenVINO (ONNX Runtime for an .onnx file, and torch for a checkpoint, where OpenVINO is not installed); on CUDA
a checkpoint -> torch and an .onnx file -> TensorRT. The checkpoint loader (``model.load_model``) knows nothing of
this: exported files are opened here, by the backend that runs them.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ...errors import UserError
from ...model import SegFormer3D, load_model
from .base import Backend, Network

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino", "onnxruntime", "tensorrt")
CPU_BACKENDS = ("openvino", "onnxruntime")
# what each exported-network backend computes in
BACKEND_PRECISIONS = {"openvino": ("fp32", "bf16"), "onnxruntime": ("fp32",), "tensorrt": ("fp16", "fp32")}
# exported files and the backends that can run them
EXPORTED = {".onnx": ("openvino", "onnxruntime", "tensorrt"), ".xml": ("openvino",), ".engine": ("tensorrt",)}

__all__ = ["BACKENDS", "BACKEND_PRECISIONS", "Backend", "Network", "is_exported", "open_backend", "open_network",
           "resolve_backend", "torch_network"]


def is_exported(path: str | Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() in EXPORTED


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_backend(name: str, weights: str | Path | None, device: torch.device) -> str:
    """The backend that runs ``weights`` on ``device`` for the user's choice ``name``; a UserError for a
    combination that cannot run."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    suffix = Path(weights).suffix.lower() if weights is not None else ""
    cuda = torch.device(device).type == "cuda"
    if name == "auto":
        if suffix == ".engine":
            return "tensorrt"
        if suffix == ".xml":
            name = "openvino"
        elif cuda:
            return "tensorrt" if suffix == ".onnx" else "torch"
        elif suffix == ".onnx":
            return "openvino" if _installed("openvino") else "onnxruntime"
        else:
            if not _installed("openvino"):
                log.info("backend auto: torch (openvino is not installed)")
                return "torch"
            return "openvino"
    if suffix in EXPORTED and name not in EXPORTED[suffix]:
        runs = " or ".join(EXPORTED[suffix])
        if name == "torch":
            raise UserError(f"'{weights}' is an exported {suffix} file (run by {runs}); --backend torch needs a "
                            "checkpoint (.safetensors, .pt, .pth)")
        raise UserError(f"'{weights}' is an exported {suffix} file, run by {runs}, not {name}")
    if name in CPU_BACKENDS and cuda:
        raise UserError(f"the {name} backend runs on the CPU; use --device cpu (or --backend torch or tensorrt "
                        "on CUDA)")
    if name == "tensorrt" and not cuda:
        raise UserError("the tensorrt backend runs on CUDA; use --device cuda (or --backend openvino on the CPU)")
    return name


def open_backend(name: str, source: SegFormer3D | str | Path, device: torch.device, precision: str = "auto",
                 size: tuple[int, int] | None = None, root: Path | None = None, threads: int | None = None,
                 batch: int = 1) -> Backend:
    """Open (and compile) the network with backend ``name`` (not auto, not torch). ``size``: the input box the
    run uses, where the bf16 check runs and the first compile happens; ``root``: the cache root; ``threads``:
    CPU threads of OpenVINO and ONNX Runtime (None: every core); ``batch``: the run's batch size (TensorRT's
    optimisation profile is tuned for it)."""
    if not isinstance(source, SegFormer3D):
        source = Path(source)
    if name == "openvino":
        from .openvino import open_openvino

        backend: Backend = open_openvino(source, precision, size, root, threads=threads)
    elif name == "onnxruntime":
        from .onnxruntime import open_onnxruntime

        backend = open_onnxruntime(source, precision, root, threads)
    elif name == "tensorrt":
        from .tensorrt import open_tensorrt

        backend = open_tensorrt(source, device, precision, size, root, batch)
    else:
        raise ValueError(f"open_backend() opens exported-network backends, not {name!r}")
    return backend  # callers log backend.describe() where it fits their output


def open_network(weights: str | Path, backend: str, device: torch.device, precision: str = "auto",
                 size: tuple[int, int] | None = None, fold_heads: bool = True, batch: int = 1,
                 threads: int | None = None) -> Network:
    """A checkpoint or exported file, ready to call on ``device``: the torch model (for the torch backend) or an
    exported-network backend, both as a :class:`Network`. ``threads``: CPU threads of OpenVINO and ONNX Runtime
    (None: every core; torch's are the process's, ``torch.set_num_threads``)."""
    name = resolve_backend(backend, weights, device)
    if name == "torch":
        return torch_network(load_model(weights), device, precision, fold_heads)
    source: SegFormer3D | Path = Path(weights) if is_exported(weights) else load_model(weights)
    return open_backend(name, source, device, precision, size, threads=threads, batch=batch)


def torch_network(model: SegFormer3D, device: torch.device, precision: str = "auto",
                  fold_heads: bool = True) -> Network:
    """A torch model as a :class:`Network` (precision auto: fp16 autocast on CUDA, fp32 on the CPU)."""
    from ..device import resolve_precision_name
    from .torch_model import TorchNetwork

    asked = precision
    precision = resolve_precision_name(precision, torch.device(device))
    where = "CUDA" if torch.device(device).type == "cuda" else "the CPU"
    return TorchNetwork(model, device, precision, fold_heads, note=f"auto: {precision} on {where}" if asked == "auto"
                        else "")
