"""What every network is (:class:`Network`): the torch model (``torch_network.py``) and the exported-network
backends (:class:`Backend`: OpenVINO, ONNX Runtime, TensorRT) alike.

A network takes the normalised N x 3 x H x W float32 tensor and returns a ``SegFormerOutput`` (stride-4 seg
logits and raw depth, on the network's device), and carries ``meta`` (the checkpoint's ModelMeta), ``name``,
``device``, ``precision`` (what it computes in), ``note`` (why that precision) and ``startup_s``. The callers
(the pipeline, eval, bench) ask only this; nothing branches on which kind it is.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from ...errors import CheckpointError
from ...model import ModelMeta, SegFormerOutput
from ...model.export import DEPTH, INPUT, SEG, ExportInfo

log = logging.getLogger(__name__)


class Network(Protocol):
    meta: ModelMeta
    name: str  # "torch", "openvino", "onnxruntime", "tensorrt"
    device: torch.device
    precision: str  # what it computes in (a name of runtime.device.PRECISIONS)
    note: str  # why that precision ("" when simply asked for)
    startup_s: float  # building it: export, compile, folding, first call
    module: torch.nn.Module | None  # the torch module it runs, where hooks (attention maps) can see its layers
    graphable: bool  # its calls are torch operations a CUDA graph can capture

    def __call__(self, x: torch.Tensor) -> SegFormerOutput: ...

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Get ready for inputs of this N x 3 x H x W shape (compile now, not on the first frame)."""

    def describe(self) -> str: ...


class Backend:
    """Base of the OpenVINO, ONNX Runtime and TensorRT backends; subclasses implement ``_infer``."""

    name = "?"
    module = None  # an exported graph: no torch layers to hook
    graphable = False  # it runs outside torch

    def __init__(self, meta: ModelMeta, info: ExportInfo, device: torch.device, precision: str,
                 note: str = "", startup_s: float = 0.0) -> None:
        self.meta = meta
        self.info = info
        self.device = torch.device(device)
        self.precision = precision
        self.note = note
        self.startup_s = startup_s
        self._resized_once = False

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        """seg logits (and depth) for a contiguous float32 batch at a size the network accepts."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> SegFormerOutput:
        x = self._fit(x.float().contiguous())
        outs = self._infer(x)
        return SegFormerOutput(outs[0], outs[1] if len(outs) > 1 else None)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        """A file exported at a fixed size runs at that size: other inputs are resized to it (the outputs are
        stride 4 of that size; callers upsample to the frame as always). Exports with --dynamic run any size."""
        size = tuple(self.info.input_size)
        if self.info.dynamic or tuple(x.shape[2:]) == size:
            return x
        if not self._resized_once:
            self._resized_once = True
            log.info("this %s export is fixed at %dx%d: %dx%d inputs are resized to it (export with --dynamic to "
                     "run every size as it is)", self.name, *size, *x.shape[2:])
        shrink = x.shape[2] > size[0] or x.shape[3] > size[1]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile for this shape now (backends that compile per shape override it)."""

    def describe(self) -> str:
        why = f" ({self.note})" if self.note else ""
        return f"backend {self.name} on {self.device}, {self.precision}{why}; start-up {self.startup_s:.2f} s"


def check_interface(inputs: Sequence[tuple[str, Sequence]], outputs: Sequence[str], where: str) -> None:
    """An exported file must take one N x 3 x H x W ``image`` and return ``seg_logits`` (and ``depth``);
    a CheckpointError saying what the file has instead."""
    outs = list(outputs)
    if outs not in ([SEG], [SEG, DEPTH]):
        raise CheckpointError(f"'{where}' is not a segformer3d-rt export: its outputs are {', '.join(outs) or 'none'}"
                              f" (expected {SEG} and {DEPTH})")
    if len(inputs) != 1 or inputs[0][0] != INPUT or len(inputs[0][1]) != 4:
        shown = ", ".join(f"{n} {list(s)}" for n, s in inputs) or "none"
        raise CheckpointError(f"'{where}' is not a segformer3d-rt export: its inputs are {shown} "
                              f"(expected one {INPUT} N x 3 x H x W)")


def check_outputs_match(info: ExportInfo, outputs: Sequence[str], where: str) -> None:
    if tuple(outputs) != tuple(info.outputs):
        raise CheckpointError(f"'{where}': its metadata promises outputs {', '.join(info.outputs)} but the network "
                              f"has {', '.join(outputs)}")
