"""Inference: uint8 batches in, class maps and depth maps out, post-processing on the model's device.

Only uint8 class maps (at model input resolution) and small depth maps (stride 4) cross back to
the host. On CUDA, batches are uploaded from pinned memory on a side stream so that the copy of
the next batch overlaps the current compute (see ``upload``/``run``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..model import SegFormer3D
from ..model.folding import fold


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
    return dev


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """None means fp32 (no autocast). auto: fp16 autocast on CUDA, fp32 on CPU."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else None
    if name == "fp32":
        return None
    if name == "fp16":
        if device.type != "cuda":
            raise UserError("fp16 needs a CUDA device; use --precision fp32 or bf16 on CPU")
        return torch.float16
    return torch.bfloat16


@dataclass
class DeviceBatch:
    images: torch.Tensor  # B x H x W x 3 uint8 on the device
    ready: torch.cuda.Event | None = None


@dataclass
class BatchResult:
    classes: torch.Tensor  # B x H x W uint8 (host)
    depth: torch.Tensor | None  # B x h x w float32 (host), in the checkpoint's depth unit


class InferenceEngine:
    """Runs the network with autocast where asked; argmax and depth conversion stay on the device.

    Autocast keeps LayerNorm and softmax in fp32 (they are on autocast's fp32 list), which is what
    keeps fp16 SegFormer numerically safe; plain ``.half()`` would not.
    """

    def __init__(self, model: SegFormer3D, device: torch.device, precision: torch.dtype | None,
                 fold_heads: bool = True) -> None:
        self.meta = model.meta
        self.device = device
        self.dtype = precision
        model = model.to(device).eval()
        self.model = fold(model) if fold_heads else model
        self.mean = torch.tensor(self.meta.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(self.meta.std, device=device).view(1, 3, 1, 1) * 255.0
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def upload(self, images: torch.Tensor) -> DeviceBatch:
        """Start copying a host batch to the device (asynchronous on CUDA with pinned memory)."""
        if self.copy_stream is None:
            return DeviceBatch(images.to(self.device))
        with torch.cuda.stream(self.copy_stream):
            dev = images.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        # the caching allocator must not recycle this memory while the compute stream still uses it
        dev.record_stream(torch.cuda.current_stream(self.device))
        return DeviceBatch(dev, ready)

    def normalise(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        if size is not None and tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def run(self, batch: DeviceBatch, size: tuple[int, int] | None = None) -> BatchResult:
        if batch.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(batch.ready)
        x = self.normalise(batch.images, size)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            out = self.model(x)
        logits = F.interpolate(out.seg_logits.float(), size=x.shape[2:], mode="bilinear", align_corners=False)
        classes = logits.argmax(dim=1).to(torch.uint8)
        depth = None
        if out.depth is not None and self.meta.depth is not None:
            depth = self.meta.depth.to_depth(out.depth.float())[:, 0]
        # one synchronising transfer of small tensors; the logits never leave the device
        return BatchResult(classes.cpu(), depth.cpu() if depth is not None else None)

    def __call__(self, images: torch.Tensor) -> BatchResult:
        return self.run(self.upload(images))
