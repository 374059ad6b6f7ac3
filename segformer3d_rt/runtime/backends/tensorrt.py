"""TensorRT on CUDA: engines built from the exported ONNX graph, and the project's .engine files.

fp16 engines are built from the mixed fp16 graph (model/onnx_fp16.py: LayerNorm and softmax in fp32) as a
strongly typed network, which is what TensorRT 11 requires (it has no precision flags) and what 10.x accepts
(STRONGLY_TYPED); an .onnx file is built as it is. An .engine file is TensorRT's serialised plan behind a small
header of ours: ``MAGIC``, a 4-byte little-endian length, that many bytes of JSON (the model's metadata, the export
info, the batch limit and the TensorRT version), then the plan. Engines are tied to the GPU and TensorRT version
that built them; the engines built from a checkpoint or from an .onnx file are cached in ``<cache>/tensorrt``
(``disk_cache.py``).
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, UserError
from ...model import ModelMeta, SegFormer3D
from ...model.export import INPUT, ExportInfo, export_onnx, onnx_metadata, parse_metadata
from ..sizes import STRIDE
from .base import Backend
from .disk_cache import cache_dir, file_digest, model_digest

MAGIC = b"S3DRT-TRT1"
MAX_BATCH = 8


def require_tensorrt(device: torch.device | None = None) -> Any:
    """The tensorrt module; a UserError when there is no CUDA GPU or no tensorrt package."""
    if not torch.cuda.is_available():
        raise UserError("TensorRT needs a CUDA GPU, and none is available here (torch.cuda.is_available() is False); "
                        "export --format onnx or openvino instead, or build the engine on the GPU machine")
    if device is not None and torch.device(device).type != "cuda":
        raise UserError(f"the tensorrt backend runs on CUDA, not {device}; use --device cuda")
    try:
        import tensorrt
    except ImportError:
        raise UserError("TensorRT needs the tensorrt package (pip install tensorrt)") from None
    return tensorrt


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def build_plan(proto: Any, info: ExportInfo, max_batch: int = MAX_BATCH) -> bytes:
    """A serialised TensorRT plan for the ONNX graph: batch 1..max_batch; H and W fixed, or for a dynamic
    export 32..the export size. The pipeline fits frames into its input box and rounds each side to a multiple
    of 32, which stays within the box only when the box's sides are multiples of 32 (``export`` requires that
    of its sizes; a run's --input-size may round up past it, and _infer then refuses the input)."""
    trt = require_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # 10.x opts in; 11.x is always strongly typed
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(proto.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse the exported graph: {errors[:300]}")
    config = builder.create_builder_config()
    h, w = info.input_size
    low = (1, 3, STRIDE, STRIDE) if info.dynamic else (1, 3, h, w)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, low, (1, 3, h, w), (max_batch, 3, h, w))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError("TensorRT could not build an engine for this network (its log above says why)")
    return bytes(plan)


def pack(meta: ModelMeta, info: ExportInfo, plan: bytes, max_batch: int = MAX_BATCH) -> bytes:
    trt = require_tensorrt()
    header = json.dumps({"meta": meta.to_json(), "export": info.to_json(), "max_batch": max_batch,
                         "tensorrt": trt.__version__}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + plan


def unpack(data: bytes, where: str) -> tuple[ModelMeta, ExportInfo, int, bytes]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise CheckpointError(f"'{where}' is not a segformer3d-rt TensorRT engine (make one with "
                              "`segformer3d-rt export --format tensorrt`)")
    (n,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + n])
    except ValueError:
        raise CheckpointError(f"'{where}': unreadable engine header") from None
    meta, info = parse_metadata(header.get("meta"), header.get("export"), where)
    return meta, info, int(header.get("max_batch", MAX_BATCH)), data[start + n:]


def build_engine_file(model: SegFormer3D, input_size: tuple[int, int] | None, dynamic: bool, precision: str
                      ) -> bytes:
    """The bytes of an .engine file for a checkpoint's model (fp16: LayerNorm and softmax kept fp32)."""
    require_tensorrt()
    proto = export_onnx(model, input_size, dynamic=dynamic, precision="fp16" if precision == "fp16" else "fp32")
    meta, info = onnx_metadata(proto, "export")
    return pack(meta, info, build_plan(proto, info))


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, plan: bytes, meta: ModelMeta, info: ExportInfo, device: torch.device, max_batch: int,
                 where: str) -> None:
        super().__init__(meta, info, device, info.precision, "fixed when the engine was built")
        trt = require_tensorrt(device)
        self.max_batch = max_batch
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(_logger(trt))
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise CheckpointError(f"'{where}' was built for another GPU or TensorRT version "
                                      f"(this is TensorRT {trt.__version__}); export it again here")
            self._context = self._engine.create_execution_context()

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.to(self.device)
        h, w = self.info.input_size
        if x.shape[2] > h or x.shape[3] > w:
            raise UserError(f"this engine takes inputs up to {h}x{w}, not {x.shape[2]}x{x.shape[3]}; use an input "
                            "box within it (--input-size) or export with a larger --input-size")
        stream = torch.cuda.current_stream(self.device)
        parts: list[list[torch.Tensor]] = []
        for chunk in x.split(self.max_batch):
            chunk = chunk.contiguous()
            ctx = self._context
            ctx.set_input_shape(INPUT, tuple(chunk.shape))
            ctx.set_tensor_address(INPUT, chunk.data_ptr())
            outs = []
            for name in self.info.outputs:
                t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=torch.float32, device=self.device)
                ctx.set_tensor_address(name, t.data_ptr())
                outs.append(t)
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT failed to run the engine")
            parts.append(outs)
        return [torch.cat(p) if len(p) > 1 else p[0] for p in zip(*parts)]


def open_tensorrt(source: SegFormer3D | Path, device: torch.device, precision: str = "auto",
                  size: tuple[int, int] | None = None, root: Path | None = None) -> TensorRTBackend:
    """An .engine file as it is; a checkpoint's model (for inputs up to ``size``, default its input size) or an
    .onnx file built into an engine (cached)."""
    trt = require_tensorrt(device)
    t0 = time.perf_counter()
    if isinstance(source, SegFormer3D):
        want = "fp32" if precision == "fp32" else "fp16"
        box = tuple(size or source.meta.input_size)
        digest = model_digest(source, "tensorrt", want, f"{box}", trt.__version__, torch.cuda.get_device_name(device))
        path = cache_dir("tensorrt", root) / f"{digest}.engine"
        if not path.is_file():
            data = build_engine_file(source, box, dynamic=True, precision=want)
            write_engine(path, data)
        where = str(path)
    else:
        path = Path(source)
        where = str(path)
        if path.suffix.lower() == ".onnx":
            from .files import read_onnx

            proto, meta, info = read_onnx(path)
            digest = file_digest(path, versions=(trt.__version__, torch.cuda.get_device_name(device)))
            cached = cache_dir("tensorrt", root) / f"{digest}.engine"
            if not cached.is_file():
                write_engine(cached, pack(meta, info, build_plan(proto, info)))
            path = cached
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' not found")
    meta, info, max_batch, plan = unpack(path.read_bytes(), where)
    if precision not in ("auto", info.precision):
        raise UserError(f"'{where}' is a {info.precision} engine (its precision is fixed when it is built), "
                        f"not {precision}")
    backend = TensorRTBackend(plan, meta, info, device, max_batch, where)
    backend.startup_s = time.perf_counter() - t0
    return backend


def write_engine(path: Path, data: bytes) -> None:
    """Written under a temporary name, then renamed."""
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write '{path}': {e.strerror or e}") from None

