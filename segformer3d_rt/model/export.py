"""torch -> ONNX: the folded network as one graph whose outputs are named ``seg_logits`` (and ``depth``), with the
checkpoint's metadata inside the file.

The graph takes the normalised N x 3 x H x W float32 image (``image``) and returns the stride-4 maps the torch
model returns; post-processing stays in torch. The batch is always dynamic; H and W are fixed at the export
size unless ``dynamic``. Exported with the TorchScript exporter at opset 17, which writes LayerNorm as one
``LayerNormalization`` op. ``ModelMeta`` (classes, palette, mean/std, depth spec, input size) and an
``ExportInfo`` travel as JSON in the file's metadata_props, so an exported file runs without its checkpoint.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .folding import fold
from .metadata import MAX_SIDE, MetadataError, ModelMeta
from .segformer import SegFormer3D

INPUT = "image"
SEG = "seg_logits"
DEPTH = "depth"
OPSET = 17
META_KEY = "segformer3d_rt.meta"  # ModelMeta.to_json()
EXPORT_KEY = "segformer3d_rt.export"  # ExportInfo as JSON


@dataclass(frozen=True)
class ExportInfo:
    """How a file was exported: its native input size, whether H and W may vary, and the weights' precision."""

    input_size: tuple[int, int]
    dynamic: bool = False
    precision: str = "fp32"  # fp32 | fp16 (fp16: LayerNorm and softmax kept in fp32)
    opset: int = OPSET
    outputs: tuple[str, ...] = (SEG, DEPTH)

    def __post_init__(self) -> None:  # an exported file is untrusted input too
        if not (isinstance(self.input_size, tuple) and len(self.input_size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= MAX_SIDE for v in self.input_size)):
            raise MetadataError("input_size", f"2 whole numbers from 32 to {MAX_SIDE}", self.input_size)
        if not isinstance(self.dynamic, bool):
            raise MetadataError("dynamic", "true or false", self.dynamic)
        if self.precision not in ("fp32", "fp16"):
            raise MetadataError("precision", "fp32 or fp16", self.precision)
        if self.outputs not in ((SEG,), (SEG, DEPTH)):
            raise MetadataError("outputs", f"[{SEG}] or [{SEG}, {DEPTH}]", self.outputs)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExportInfo":
        d: dict[str, Any] = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


class _Graph(nn.Module):
    """What is traced: the folded model returning a tuple (ONNX outputs are positional)."""

    def __init__(self, model: SegFormer3D) -> None:
        super().__init__()
        self.net = fold(model.cpu().eval())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)
        return (out.seg_logits,) if out.depth is None else (out.seg_logits, out.depth)


def export_onnx(model: SegFormer3D, input_size: tuple[int, int] | None = None, dynamic: bool = False,
                precision: str = "fp32") -> Any:
    """The model as an in-memory ``onnx.ModelProto`` with its metadata embedded. ``input_size`` (H, W; default
    the checkpoint's recommendation) becomes the metadata's input size. ``precision`` fp16 converts the graph
    to fp16 with LayerNorm and softmax kept in fp32 (inputs and outputs stay float32)."""
    import onnx

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"unknown ONNX precision {precision!r}")
    size = tuple(input_size or model.meta.input_size)
    meta = model.meta.with_(input_size=size)
    outputs = (SEG,) if model.depth_head is None else (SEG, DEPTH)
    graph = _Graph(model).eval()  # the exporter restores this module's mode: eval stays eval
    spatial = {2: "height", 3: "width"} if dynamic else {}
    axes = {INPUT: {0: "batch", **spatial}}
    axes.update({name: {0: "batch", **({2: "height_4", 3: "width_4"} if dynamic else {})} for name in outputs})
    example = torch.zeros(1, 3, *size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of dynamo; it is still the simpler graph
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    if precision == "fp16":
        from .onnx_fp16 import to_mixed_fp16

        proto = to_mixed_fp16(proto)
    info = ExportInfo(input_size=size, dynamic=dynamic, precision=precision, outputs=outputs)
    set_metadata(proto, meta, info)
    return proto


def set_metadata(proto: Any, meta: ModelMeta, info: ExportInfo) -> None:
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({META_KEY: meta.to_json(), EXPORT_KEY: info.to_json()})
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "segformer3d-rt"


def parse_metadata(meta_json: str | None, info_json: str | None, where: str) -> tuple[ModelMeta, ExportInfo]:
    """The two JSON strings an exported file carries -> (ModelMeta, ExportInfo); a CheckpointError naming
    ``where`` when they are missing or unreadable (a file exported by something else)."""
    if not meta_json or not info_json:
        raise CheckpointError(f"'{where}' was not exported by segformer3d-rt (no {META_KEY} metadata inside); "
                              "export it with `segformer3d-rt export`")
    try:
        return ModelMeta.from_json(meta_json), ExportInfo.from_json(info_json)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"'{where}': its segformer3d-rt metadata is refused: {e}") from None


def onnx_metadata(proto: Any, where: str) -> tuple[ModelMeta, ExportInfo]:
    props = {p.key: p.value for p in proto.metadata_props}
    return parse_metadata(props.get(META_KEY), props.get(EXPORT_KEY), where)


def save_onnx(proto: Any, path: str | Path) -> Path:
    """Write the file under a temporary name, then rename (a failed write leaves nothing half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(proto.SerializeToString())
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write '{path}': {e.strerror or e}") from None
    return path
