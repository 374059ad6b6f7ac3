"""Training losses: cross-entropy with the ignore label, and depth losses over valid pixels only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .model.metadata import DepthSpec

DEPTH_LOSSES = ("log-l1", "l1", "berhu", "silog", "mse")


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy at label resolution (logits are upsampled; labels are never interpolated)."""
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0  # keeps the graph; a crop of pure void teaches nothing
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


def depth_loss(raw: torch.Tensor, depth: torch.Tensor, spec: DepthSpec, kind: str = "log-l1",
               silog_lambda: float = 0.85) -> torch.Tensor:
    """raw: B x 1 x h x w network output; depth: B x 1 x H x W metres (0 = invalid)."""
    raw = F.interpolate(raw.float(), size=depth.shape[-2:], mode="bilinear", align_corners=False)
    valid = depth > 0
    if not valid.any():
        return raw.sum() * 0.0
    gt = depth[valid]
    if kind == "mse":  # the original's loss, on the raw channel, but masked
        return F.mse_loss(raw[valid], spec.from_depth(gt))
    pred = spec.to_depth(raw[valid])
    if kind == "l1":
        return (pred - gt).abs().mean()
    if kind == "log-l1":
        return (pred.clamp_min(1e-3).log() - gt.log()).abs().mean()
    if kind == "berhu":
        diff = (pred - gt).abs()
        c = (0.2 * diff.max()).detach().clamp_min(1e-6)
        return torch.where(diff <= c, diff, (diff ** 2 + c ** 2) / (2 * c)).mean()
    if kind == "silog":
        g = pred.clamp_min(1e-3).log() - gt.log()
        return torch.sqrt((g ** 2).mean() - silog_lambda * g.mean() ** 2 + 1e-8)
    raise ValueError(f"unknown depth loss {kind!r}; choose one of {', '.join(DEPTH_LOSSES)}")
