"""OpenVINO on the CPU: a checkpoint (exported to ONNX in memory), an .onnx file or an OpenVINO IR (.xml + .bin).

The network is compiled once per input shape (reshaped to it: static shapes run about 1.5x faster on the CPU
than one dynamic compile) with the latency hint and every core. Compiled blobs are cached in
``<cache>/openvino/blobs`` by OpenVINO itself, and a checkpoint's IR in ``<cache>/openvino/<digest>.xml``, so a
second start skips the export and the compile. Precision: ``fp32``, ``bf16``, or ``auto``: bf16 when the CPU has
it and bf16 passes the fidelity check against fp32 on the check frame (decision cached beside the IR).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, UserError
from ...model import ModelMeta, SegFormer3D
from ...model.export import INPUT, ExportInfo, export_onnx, onnx_metadata, parse_metadata
from ..lru import LRUCache
from ..sizes import STRIDE
from .base import Backend, check_interface, check_outputs_match
from .disk_cache import cache_dir, file_digest, model_digest
from .fidelity import Fidelity, check_input, compare
from .files import read_onnx

log = logging.getLogger(__name__)
HINTS = {"fp32": "f32", "bf16": "bf16"}
RT_META = ["segformer3d_rt", "meta"]
RT_EXPORT = ["segformer3d_rt", "export"]
_CORE: Any = None


def core() -> Any:
    """The process's one OpenVINO Core; a UserError when OpenVINO is not installed."""
    global _CORE
    if _CORE is None:
        try:
            import openvino as ov
        except ImportError:
            raise UserError("the openvino backend needs the openvino package (pip install openvino)") from None
        _CORE = ov.Core()
    return _CORE


def has_bf16() -> bool:
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _version() -> str:
    import openvino as ov

    return ov.__version__


def model_from_onnx(proto: Any, meta: ModelMeta, info: ExportInfo) -> Any:
    """An ov.Model from an in-memory ONNX graph, with the metadata in its rt_info."""
    model = core().read_model(proto.SerializeToString())  # OpenVINO's ONNX frontend reads the bytes
    model.set_rt_info(meta.to_json(), RT_META)
    model.set_rt_info(info.to_json(), RT_EXPORT)
    return model


def save_ir(model: Any, path: Path, compress_to_fp16: bool = False) -> Path:
    """``path`` (.xml) and its .bin, written under temporary names and renamed (the .xml last: it marks a
    complete pair)."""
    import openvino as ov

    tmp = path.with_name(path.stem + ".partial.xml")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(tmp), compress_to_fp16=compress_to_fp16)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
    except (OSError, RuntimeError) as e:
        for t in (tmp, tmp.with_suffix(".bin")):
            t.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write '{path}': {getattr(e, 'strerror', None) or e}") from None
    return path


def _rt(model: Any, key: list[str]) -> str | None:
    try:
        return str(model.get_rt_info(key).astype(str))
    except RuntimeError:
        return None


def read_ir(path: Path) -> tuple[Any, ModelMeta, ExportInfo]:
    """An IR written by segformer3d-rt: (ov.Model, metadata, export info)."""
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' not found")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise CheckpointError(f"'{path}' needs its weights file '{weights.name}' beside it (not found)")
    try:
        model = core().read_model(str(path), str(weights))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise CheckpointError(f"'{path}' is not a readable OpenVINO IR ({first[:200]})") from None
    inputs = [(i.get_any_name(), list(i.get_partial_shape())) for i in model.inputs]
    check_interface(inputs, [o.get_any_name() for o in model.outputs], str(path))
    meta, info = parse_metadata(_rt(model, RT_META), _rt(model, RT_EXPORT), str(path))
    check_outputs_match(info, [o.get_any_name() for o in model.outputs], str(path))
    return model, meta, info


def load_source(source: SegFormer3D | Path, root: Path | None = None) -> tuple[Any, ModelMeta, ExportInfo, str]:
    """(ov.Model, meta, info, digest) for a checkpoint's model (its IR cached), an .onnx file or an .xml IR."""
    if isinstance(source, SegFormer3D):
        digest = model_digest(source, "openvino", _version(), torch.__version__)
        cached = cache_dir("openvino", root) / f"{digest}.xml"
        if cached.is_file() and cached.with_suffix(".bin").is_file():
            try:
                return (*read_ir(cached), digest)
            except CheckpointError:
                log.warning("ignoring an unreadable cached IR %s", cached)
        proto = export_onnx(source, dynamic=True)
        meta, info = onnx_metadata(proto, "export")
        model = model_from_onnx(proto, meta, info)
        try:
            save_ir(model, cached)
        except CheckpointError as e:
            log.warning("not cached: %s", e)
        return model, meta, info, digest
    path = Path(source)
    if path.suffix.lower() == ".xml":
        model, meta, info = read_ir(path)
        return model, meta, info, file_digest(path, path.with_suffix(".bin"), versions=(_version(),))
    proto, meta, info = read_onnx(path)
    return model_from_onnx(proto, meta, info), meta, info, file_digest(path, versions=(_version(),))


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, model: Any, meta: ModelMeta, info: ExportInfo, precision: str, note: str = "",
                 blobs: Path | None = None, threads: int | None = None) -> None:
        super().__init__(meta, info, torch.device("cpu"), precision, note)
        self._model = model
        # latency hint for batch-1 streams; INFERENCE_NUM_THREADS at its default (every core) unless given
        self._config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        if blobs is not None:
            self._config["CACHE_DIR"] = str(blobs)
        # input shape -> (compiled model, infer request); a run meets one or two shapes (full and last batch)
        self._compiled: LRUCache[tuple, tuple[Any, Any]] = LRUCache(4)
        self.compile_s = 0.0

    def _compile(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        t0 = time.perf_counter()
        m = self._model.clone()
        m.reshape({INPUT: list(shape)})
        compiled = core().compile_model(m, "CPU", self._config)
        self.compile_s += time.perf_counter() - t0
        return compiled, compiled.create_infer_request()

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile for ``shape`` now (start-up) rather than on the first frame."""
        self._compiled.get_or_create(tuple(shape), lambda: self._compile(tuple(shape)))

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = x.shape[0]
        # a smaller batch of a size already compiled (a file's short last batch) is padded into it: a compile
        # costs about a second, mid-run; the padded frames cost one batch's worth at most
        bigger = [s[0] for s in self._compiled.keys() if s[1:] == tuple(x.shape[1:]) and s[0] > n]
        if bigger and tuple(x.shape) not in self._compiled.keys():
            pad = min(bigger) - n
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        shape = tuple(x.shape)
        _, request = self._compiled.get_or_create(shape, lambda: self._compile(shape))
        request.infer({INPUT: x.numpy()}, share_inputs=True)
        # the request's output buffers are reused by the next call: copy out
        return [torch.from_numpy(request.get_tensor(name).data[:n].copy()) for name in self.info.outputs]


def _check_size(info: ExportInfo, size: tuple[int, int] | None) -> tuple[int, int]:
    if not info.dynamic:
        return tuple(info.input_size)
    h, w = size or info.input_size
    return max(STRIDE, h // STRIDE * STRIDE), max(STRIDE, w // STRIDE * STRIDE)


def bf16_fidelity(model: Any, meta: ModelMeta, info: ExportInfo, size: tuple[int, int],
                  blobs: Path | None) -> Fidelity:
    """bf16 against fp32 of the same network on the check frame."""
    x = check_input(meta, size)
    ref = OpenVinoBackend(model, meta, info, "fp32", blobs=blobs)(x)
    low = OpenVinoBackend(model, meta, info, "bf16", blobs=blobs)(x)
    return compare(ref, low, meta)


def choose_precision(asked: str, model: Any, meta: ModelMeta, info: ExportInfo, size: tuple[int, int],
                     digest: str, folder: Path, blobs: Path | None) -> tuple[str, str]:
    """(precision, why) for ``asked`` auto | fp32 | bf16."""
    if asked == "fp32":
        return "fp32", "asked for"
    if asked not in ("auto", "bf16"):
        raise UserError(f"the openvino backend runs fp32 or bf16 on the CPU, not {asked}")
    if not has_bf16():
        return "fp32", ("bf16 asked for, but this CPU has no bf16 support" if asked == "bf16"
                        else "this CPU has no bf16 support")
    if asked == "bf16":
        return "bf16", "asked for"
    record = folder / f"{digest}.bf16-{size[0]}x{size[1]}.json"
    fid = None
    try:
        fid = Fidelity(**json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    if fid is None:
        fid = bf16_fidelity(model, meta, info, size, blobs)
        try:
            record.write_text(json.dumps(fid.as_dict()))
        except OSError:
            pass
    summary = f"argmax {fid.argmax_agreement * 100:.2f}%" + (
        f", depth {fid.depth_rel * 100:.2f}%" if fid.depth_rel is not None else "")
    if fid.passes():
        return "bf16", f"this CPU has bf16 and bf16 kept the outputs against fp32: {summary}"
    return "fp32", f"bf16 changed the outputs too much against fp32: {summary}, where bf16 needs argmax >= 99.5% " \
                   "and depth <= 1%"


def open_openvino(source: SegFormer3D | Path, precision: str = "auto", size: tuple[int, int] | None = None,
                  root: Path | None = None, batch: int = 1, threads: int | None = None) -> OpenVinoBackend:
    """The backend, compiled for ``batch`` x ``size`` (the check size: the run's input box) before returning."""
    t0 = time.perf_counter()
    model, meta, info, digest = load_source(source, root)
    folder = cache_dir("openvino", root)
    blobs = folder / "blobs"
    check = _check_size(info, size)
    chosen, why = choose_precision(precision, model, meta, info, check, digest, folder, blobs)
    backend = OpenVinoBackend(model, meta, info, chosen, why, blobs=blobs, threads=threads)
    backend.prepare((batch, 3, *check))
    backend.startup_s = time.perf_counter() - t0
    return backend

