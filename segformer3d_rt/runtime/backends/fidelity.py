"""How close one run of the network is to another on the same frame: the export self-check (exported file
against the torch model) and the bf16 decision (bf16 against fp32 of the same backend).

The frame is a driving scene the network has an opinion about (noise gives near-tied logits and says nothing):
a given RGB image, or by default the held-out procedural scene the benchmarks use.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...model import ModelMeta, SegFormerOutput
from ..normalize import normalize

# bf16 is used only where it keeps the outputs: the thresholds (argmax agreement, mean depth difference)
BF16_MIN_ARGMAX = 0.995
BF16_MAX_DEPTH_REL = 0.01


@dataclass(frozen=True)
class Fidelity:
    max_abs_seg: float  # max |logit difference|
    argmax_agreement: float  # share of stride-4 pixels with the same class
    max_abs_depth: float | None = None  # max |raw depth difference|
    depth_rel: float | None = None  # mean |d - d_ref| / d_ref, depth in the checkpoint's unit
    depth_rel_p99: float | None = None  # its 99th percentile

    def passes(self, min_argmax: float = BF16_MIN_ARGMAX, max_depth_rel: float = BF16_MAX_DEPTH_REL) -> bool:
        return self.argmax_agreement >= min_argmax and (self.depth_rel is None or self.depth_rel <= max_depth_rel)

    def line(self) -> str:
        parts = [f"max |diff| seg {self.max_abs_seg:.2g}"]
        if self.max_abs_depth is not None:
            parts[0] += f", depth {self.max_abs_depth:.2g}"
        parts.append(f"argmax agreement {self.argmax_agreement * 100:.2f}%")
        if self.depth_rel is not None:
            parts.append(f"depth relative error {self.depth_rel * 100:.3f}%")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)


def compare(ref: SegFormerOutput, out: SegFormerOutput, meta: ModelMeta) -> Fidelity:
    r, o = ref.seg_logits.float().cpu(), out.seg_logits.float().cpu()
    if o.shape != r.shape:  # a fixed-size export run on another size: compare at the reference's resolution
        o = F.interpolate(o, size=r.shape[2:], mode="bilinear", align_corners=False)
    fid = {"max_abs_seg": (r - o).abs().max().item(),
           "argmax_agreement": (r.argmax(1) == o.argmax(1)).float().mean().item()}
    if ref.depth is not None and out.depth is not None:
        rd, od = ref.depth.float().cpu(), out.depth.float().cpu()
        if od.shape != rd.shape:
            od = F.interpolate(od, size=rd.shape[2:], mode="bilinear", align_corners=False)
        fid["max_abs_depth"] = (rd - od).abs().max().item()
        if meta.depth is not None:
            d_ref, d = meta.depth.to_depth(rd), meta.depth.to_depth(od)
            rel = (d - d_ref).abs() / d_ref.clamp_min(1e-6)
            fid["depth_rel"] = rel.mean().item()
            fid["depth_rel_p99"] = torch.quantile(rel.flatten()[:1_000_000].float(), 0.99).item()
    return Fidelity(**fid)


def check_frame(size: tuple[int, int], image: np.ndarray | None = None) -> np.ndarray:
    """An H x W x 3 uint8 RGB frame: ``image`` resized to ``size``, or the held-out procedural driving scene."""
    if image is None:
        from ...synthetic import HELD_OUT_SEED, SEED_STRIDE, render_sample

        return render_sample(HELD_OUT_SEED * SEED_STRIDE, *size).image
    import cv2

    h, w = size
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)


def check_input(meta: ModelMeta, size: tuple[int, int], batch: int = 1, image: np.ndarray | None = None
                ) -> torch.Tensor:
    """The check frame normalised with the checkpoint's mean/std: B x 3 x H x W float32."""
    frame = check_frame(size, image)
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
    return normalize(x, meta.mean, meta.std).repeat(batch, 1, 1, 1)
