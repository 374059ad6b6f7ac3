"""ONNX Runtime on the CPU: an .onnx file, or a checkpoint exported to ONNX (about a second for B0; the export is
kept in ``<cache>/onnxruntime``, so a second start skips it).

It computes in the precision of the graph: fp32, or the fp16 of an ``--precision fp16`` export (LayerNorm and
softmax in fp32). Threads: ONNX Runtime's default, every physical core, unless given.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, UserError
from ...model import ModelMeta, SegFormer3D
from ...model.export import INPUT, ExportInfo, export_onnx, onnx_metadata, save_onnx
from .base import Backend
from .disk_cache import cache_dir, model_digest
from .files import read_onnx


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, session: Any, meta: ModelMeta, info: ExportInfo, note: str = "") -> None:
        super().__init__(meta, info, torch.device("cpu"), info.precision, note)
        self._session = session

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self._session.run(list(self.info.outputs), {INPUT: x.numpy()})
        return [torch.from_numpy(o) for o in outs]


def _exported(model: SegFormer3D, root: Path | None) -> tuple[Any, ModelMeta, ExportInfo]:
    """A checkpoint's model as ONNX, kept in ``<cache>/onnxruntime`` (the export is most of the start-up)."""
    path = cache_dir("onnxruntime", root) / f"{model_digest(model, 'onnxruntime', torch.__version__)}.onnx"
    if path.is_file():
        try:
            return read_onnx(path)
        except CheckpointError:
            pass  # unreadable: exported again below
    proto = export_onnx(model, dynamic=True)
    try:
        save_onnx(proto, path)
    except CheckpointError:
        pass  # not cached; this start still runs
    return (proto, *onnx_metadata(proto, "export"))


def open_onnxruntime(source: SegFormer3D | Path, precision: str = "auto", root: Path | None = None,
                     threads: int | None = None) -> OnnxRuntimeBackend:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("the onnxruntime backend needs the onnxruntime package (pip install onnxruntime)") from None
    t0 = time.perf_counter()
    if isinstance(source, SegFormer3D):
        proto, meta, info = _exported(source, root)
    else:
        proto, meta, info = read_onnx(source)
    if precision not in ("auto", info.precision):
        raise UserError(f"the onnxruntime backend computes in the precision of the graph ({info.precision} here), "
                        f"not {precision}; use --backend openvino for bf16 on the CPU")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for graphs it cannot run
        where = source if not isinstance(source, SegFormer3D) else "the exported checkpoint"
        raise UserError(f"onnxruntime cannot run '{where}': {str(e).splitlines()[0][:200]}") from None
    backend = OnnxRuntimeBackend(session, meta, info, "the precision of the graph")
    backend.startup_s = time.perf_counter() - t0
    return backend
