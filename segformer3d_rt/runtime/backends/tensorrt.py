"""TensorRT on CUDA: engines built from the exported ONNX graph, and the project's .engine files.

fp16 engines are built from the mixed fp16 graph (model/onnx_fp16.py: LayerNorm and softmax in fp32) as a
strongly typed network, which is what TensorRT 11 requires (it has no precision flags) and what 10.x accepts
(STRONGLY_TYPED); an .onnx file is built as it is. An .engine file is TensorRT's serialised plan behind a small
header of ours: ``MAGIC``, a 4-byte little-endian length, that many bytes of JSON (the model's metadata, the export
info, the batch limit and the TensorRT version), then the plan. Engines are tied to the GPU and TensorRT version
that built them; the engines built from a checkpoint or from an .onnx file are cached in ``<cache>/tensorrt``
(``disk_cache.py``), named by the source, the precision, the input box, the profile's batches, the TensorRT
version and the GPU.

Streams: TensorRT runs on the caller's current torch stream; where that is the legacy default stream (stream 0,
on which ``execute_async_v3`` synchronises every call) it runs on the backend's own stream instead, joined to
the caller's both ways, so the outputs are ordered on the caller's stream like any torch result (see ``_infer``).
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
from ..device import PRECISIONS
from ..sizes import STRIDE
from .base import Backend
from .disk_cache import cache_dir, file_digest, model_digest

MAGIC = b"S3DRT-TRT1"
MAX_BATCH = 8
ENGINE_PRECISIONS = ("fp16", "fp32")  # what an engine of ours computes in (ExportInfo has no bf16 graph)
DEFAULT_STREAMS = (0, 1, 2)  # the legacy default, cudaStreamLegacy, cudaStreamPerThread: TensorRT syncs on them

# TensorRT's tensor types (trt.DataType member names) as torch dtypes; the reduced floats from device.PRECISIONS
TRT_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32, "HALF": PRECISIONS["fp16"], "BF16": PRECISIONS["bf16"], "INT8": torch.int8,
    "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
    "FP8": torch.float8_e4m3fn,
}

_LOGGER: Any = None  # TensorRT wants one logger for the process, alive as long as its builders and runtimes


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
    """The process's one TensorRT logger (made on first use: tensorrt is imported only when needed)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def torch_dtype(trt_dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT tensor type (a trt.DataType member, or its name)."""
    name = trt_dtype if isinstance(trt_dtype, str) else getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in TRT_DTYPES:
        raise CheckpointError(f"this engine has a {name} tensor, which torch cannot hold")
    return TRT_DTYPES[name]


def engine_precision(asked: str) -> str:
    """The precision an engine is built in for a --precision setting (auto: fp16); one UserError line for what
    TensorRT engines of ours cannot be, before any build (a bf16 request once built fp16 and then refused it)."""
    if asked == "auto":
        return "fp16"
    if asked not in ENGINE_PRECISIONS:
        raise UserError(f"the tensorrt backend builds fp16 or fp32 engines, not {asked}; use --precision fp16 "
                        "(or auto) or fp32, or --backend torch for bf16")
    return asked


def opt_batch_for(batch: int | None, max_batch: int = MAX_BATCH) -> int:
    """The optimisation profile's optimum batch: the run's batch size, clamped to 1..max_batch."""
    return max(1, min(int(batch or 1), max_batch))


def profile_shapes(input_size: tuple[int, int], dynamic: bool, opt_batch: int = 1, max_batch: int = MAX_BATCH
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes: batch 1..max_batch (optimum ``opt_batch``); H and W fixed, or for a
    dynamic export 32..the export size (optimum the export size, what the pipeline feeds)."""
    h, w = input_size
    opt = opt_batch_for(opt_batch, max_batch)
    low = (1, 3, STRIDE, STRIDE) if dynamic else (1, 3, h, w)
    return low, (opt, 3, h, w), (max_batch, 3, h, w)


def cache_versions(precision: str, box: tuple[int, int] | None, opt_batch: int, max_batch: int, trt_version: str,
                   gpu: str) -> tuple[str, ...]:
    """What, besides the source itself, names a cached engine: every setting the build depends on, so that
    engines of other precisions, boxes or profiles never share a file."""
    box_text = "x".join(str(v) for v in box) if box else "file"
    return (f"precision={precision}", f"box={box_text}", f"opt_batch={opt_batch}", f"max_batch={max_batch}",
            f"tensorrt={trt_version}", f"gpu={gpu}")


def shape_fits(shape: tuple[int, ...], low: tuple[int, ...], high: tuple[int, ...]) -> bool:
    return len(shape) == len(low) == len(high) and all(a <= s <= b for s, a, b in zip(shape, low, high))


def shape_error(shape: tuple[int, ...], low: tuple[int, ...], high: tuple[int, ...]) -> str:
    def fmt(t: tuple[int, ...]) -> str:
        return "x".join(str(v) for v in t)

    return (f"this TensorRT engine does not take a {fmt(shape)} input: its profile covers {fmt(low)} to {fmt(high)} "
            "(batch x channels x H x W); use an input box within it or export again with a larger --input-size")


def uses_default_stream(handle: int) -> bool:
    """Whether a CUDA stream handle is a default stream, on which TensorRT synchronises every enqueue."""
    return int(handle) in DEFAULT_STREAMS


def build_plan(proto: Any, info: ExportInfo, max_batch: int = MAX_BATCH, opt_batch: int = 1,
               device: torch.device | None = None) -> bytes:
    """A serialised TensorRT plan for the ONNX graph, built on ``device`` (None: the current one): shapes from
    ``profile_shapes``. The pipeline fits frames into its input box and rounds each side to a multiple
    of 32, which stays within the box only when the box's sides are multiples of 32 (``export`` requires that
    of its sizes; a run's --input-size may round up past it, and _infer then refuses the input)."""
    trt = require_tensorrt(device)
    # the builder times kernels on the current device, and a plan runs only on the GPU model it was built on
    with torch.cuda.device(torch.device(device) if device is not None else torch.cuda.current_device()):
        return _build_plan(trt, proto, info, max_batch, opt_batch)


def _build_plan(trt: Any, proto: Any, info: ExportInfo, max_batch: int, opt_batch: int) -> bytes:
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
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, *profile_shapes(info.input_size, info.dynamic, opt_batch, max_batch))
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


def build_engine_file(model: SegFormer3D, input_size: tuple[int, int] | None, dynamic: bool, precision: str,
                      opt_batch: int = 1, device: torch.device | None = None) -> bytes:
    """The bytes of an .engine file for a checkpoint's model (fp16: LayerNorm and softmax kept fp32), built on
    ``device`` (None: the current one) with the profile's optimum at ``opt_batch``."""
    precision = engine_precision(precision)
    require_tensorrt(device)
    proto = export_onnx(model, input_size, dynamic=dynamic, precision=precision)
    meta, info = onnx_metadata(proto, "export")
    return pack(meta, info, build_plan(proto, info, MAX_BATCH, opt_batch, device))


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, plan: bytes, meta: ModelMeta, info: ExportInfo, device: torch.device, max_batch: int,
                 where: str) -> None:
        super().__init__(meta, info, device, info.precision, "fixed when the engine was built")
        trt = require_tensorrt(self.device)
        self.max_batch = max_batch
        with torch.cuda.device(self.device):  # an engine lives on the device it is deserialised on
            self._runtime = trt.Runtime(_logger(trt))
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise CheckpointError(f"'{where}' was built for another GPU or TensorRT version "
                                      f"(this is TensorRT {trt.__version__}); export it again here")
            self._context = self._engine.create_execution_context()
            self._own_stream = torch.cuda.Stream(self.device)  # used only when the caller is on a default stream
        self._input_dtype = torch_dtype(self._engine.get_tensor_dtype(INPUT))
        self._output_dtypes = {n: torch_dtype(self._engine.get_tensor_dtype(n)) for n in info.outputs}
        low, _, high = (tuple(int(v) for v in s) for s in self._engine.get_tensor_profile_shape(INPUT, 0))
        self._low, self._high = low, high

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        caller = torch.cuda.current_stream(self.device)
        # TensorRT synchronises the whole device on a default stream; keep the caller's ordering on our own
        stream = self._own_stream if uses_default_stream(caller.cuda_stream) else caller
        x = x.to(self.device, self._input_dtype, non_blocking=True)
        if stream is not caller:
            stream.wait_stream(caller)
        parts: list[list[torch.Tensor]] = []
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            for chunk in x.split(self.max_batch):
                chunk = chunk.contiguous()
                shape = tuple(chunk.shape)
                ctx = self._context
                if not shape_fits(shape, self._low, self._high) or not ctx.set_input_shape(INPUT, shape):
                    raise UserError(shape_error(shape, self._low, self._high))
                ctx.set_tensor_address(INPUT, chunk.data_ptr())
                outs = []
                for name in self.info.outputs:
                    t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._output_dtypes[name],
                                    device=self.device)
                    ctx.set_tensor_address(name, t.data_ptr())
                    outs.append(t)
                if not ctx.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError("TensorRT failed to run the engine")
                if stream is not caller:
                    chunk.record_stream(stream)  # made on the caller's stream, read on ours
                parts.append(outs)
            results = [torch.cat(p) if len(p) > 1 else p[0] for p in zip(*parts)]
            results = [r.float() for r in results]  # callers take float32, whatever the engine returns
        if stream is not caller:
            caller.wait_stream(stream)
            for r in results:
                r.record_stream(caller)  # made on our stream, used on the caller's
        return results


def open_tensorrt(source: SegFormer3D | Path, device: torch.device, precision: str = "auto",
                  size: tuple[int, int] | None = None, root: Path | None = None, batch: int = 1
                  ) -> TensorRTBackend:
    """An .engine file as it is; a checkpoint's model (for inputs up to ``size``, default its input size) or an
    .onnx file built into an engine (cached), its profile's optimum at the run's ``batch``."""
    device = torch.device(device)
    trt = require_tensorrt(device)
    t0 = time.perf_counter()
    opt = opt_batch_for(batch)
    gpu = torch.cuda.get_device_name(device)
    if isinstance(source, SegFormer3D):
        want = engine_precision(precision)  # bf16 and the like: one line before any export or build
        box = tuple(size or source.meta.input_size)
        versions = cache_versions(want, box, opt, MAX_BATCH, trt.__version__, gpu)
        path = cache_dir("tensorrt", root) / f"{model_digest(source, 'tensorrt', *versions)}.engine"
        if not path.is_file():
            write_engine(path, build_engine_file(source, box, True, want, opt, device))
        where = str(path)
    else:
        path = Path(source)
        where = str(path)
        if path.suffix.lower() == ".onnx":
            from .files import read_onnx

            proto, meta, info = read_onnx(path)
            if precision not in ("auto", info.precision):
                raise UserError(f"'{where}' is a {info.precision} graph (its precision was fixed when it was "
                                f"exported), not {precision}")
            versions = cache_versions(info.precision, None, opt, MAX_BATCH, trt.__version__, gpu)
            cached = cache_dir("tensorrt", root) / f"{file_digest(path, versions=versions)}.engine"
            if not cached.is_file():
                write_engine(cached, pack(meta, info, build_plan(proto, info, MAX_BATCH, opt, device)))
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

