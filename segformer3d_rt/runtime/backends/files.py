"""Reading an exported .onnx file: the graph, its metadata and its interface, each problem one clear line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import CheckpointError
from ...model import ModelMeta
from ...model.export import ExportInfo, onnx_metadata
from .base import check_interface, check_outputs_match


def onnx_interface(proto: Any) -> tuple[list[tuple[str, list]], list[str]]:
    """(input name, dims) and output names; a dim is its size or its symbolic name."""
    weights = {i.name for i in proto.graph.initializer}

    def dims(v: Any) -> list:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    inputs = [(v.name, dims(v)) for v in proto.graph.input if v.name not in weights]
    return inputs, [v.name for v in proto.graph.output]


def read_onnx(path: str | Path) -> tuple[Any, ModelMeta, ExportInfo]:
    """(onnx.ModelProto, metadata, export info) of a segformer3d-rt .onnx file."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' not found")
    try:
        proto = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(f"'{path}' is not a readable ONNX file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    if not proto.graph.node:
        raise CheckpointError(f"'{path}' is not a readable ONNX file (no graph inside)")
    inputs, outputs = onnx_interface(proto)
    check_interface(inputs, outputs, str(path))
    meta, info = onnx_metadata(proto, str(path))
    check_outputs_match(info, outputs, str(path))
    return proto, meta, info
