"""The torch model as a :class:`~segformer3d_rt.runtime.backends.base.Network`: on its device, in eval mode,
its decoder heads folded (exact; ``model/folding.py``), called under autocast in its precision.

Autocast keeps LayerNorm and softmax in fp32 (they are on autocast's fp32 list), which is what keeps fp16
SegFormer numerically safe; plain ``.half()`` would not.
"""
from __future__ import annotations

import time

import torch

from ...model import SegFormer3D, SegFormerOutput
from ...model.folding import fold
from ..device import autocast, explicit_device, precision_dtype


class TorchNetwork:
    name = "torch"
    graphable = True  # torch operations only: a CUDA graph can capture a call

    def __init__(self, model: SegFormer3D, device: torch.device, precision: str = "fp32", fold_heads: bool = True,
                 note: str = "") -> None:
        t0 = time.perf_counter()
        self.meta = model.meta
        self.device = explicit_device(device)  # 'cuda' -> 'cuda:N': stage threads have their own current device
        self.precision = precision
        self.dtype = precision_dtype(precision)
        self.note = note
        model = model.to(self.device).eval()
        self.module = fold(model) if fold_heads else model
        self.folded = fold_heads
        self.startup_s = time.perf_counter() - t0

    def __call__(self, x: torch.Tensor) -> SegFormerOutput:
        with autocast(self.device, self.dtype):
            return self.module(x)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Nothing to compile: torch runs any shape as it comes."""

    def describe(self) -> str:
        why = f" ({self.note})" if self.note else ""
        return f"backend torch on {self.device}, {self.precision}{why}"
