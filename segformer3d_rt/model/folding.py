"""Exact inference-time folding of the All-MLP decoders (field notes: "an exact speed-up").

In eval mode everything before the ReLU is linear: per-stage projection, bilinear upsampling
(its weights sum to 1, so biases pass through), concatenation, the 1x1 fuse conv and BatchNorm.
Linear maps commute with the upsampling, so each head equals: per stage, one folded matrix
(BN scale x fuse slice x projection) applied at that stage's own resolution, upsample, sum, one
bias, ReLU, predictor. Both heads' matrices are stacked into one conv per stage, and no
1024-channel tensor at stride 4 is ever built. Training keeps the unfolded form; fold again
whenever the weights change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .segformer import AllMLPHead, SegFormer3D, SegFormerOutput


def _fold_head(head: AllMLPHead) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-stage matrices (dim x C_i) and one bias (dim) equal to fuse∘concat∘proj followed by BN."""
    bn = head.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    mats, biases = head.linear_maps()  # fuse∘concat∘proj, folded as forward() evaluates it
    bias = shift.clone()
    for b in biases:
        bias = bias + scale * b
    return [scale[:, None] * m for m in mats], bias


class FoldedHeads(nn.Module):
    """The seg (and depth) heads of an eval-mode model, folded and stacked."""

    def __init__(self, model: SegFormer3D) -> None:
        super().__init__()
        heads = [model.seg_head] + ([model.depth_head] if model.depth_head is not None else [])
        self.dims = [h.fuse.weight.shape[0] for h in heads]
        with torch.no_grad():
            folded = [_fold_head(h) for h in heads]
            self.proj = nn.ModuleList()
            for i, c in enumerate(model.meta.embed_dims):
                conv = nn.Conv2d(c, sum(self.dims), 1, bias=(i == 0))
                conv.weight.copy_(torch.cat([m[i] for m, _ in folded])[:, :, None, None])
                if i == 0:  # every bias summed into stage 1's conv: it passes the upsampling unchanged
                    conv.bias.copy_(torch.cat([b for _, b in folded]))
                self.proj.append(conv)
            self.preds = nn.ModuleList()
            for h in heads:
                pred = nn.Conv2d(h.pred.in_channels, h.pred.out_channels, 1)
                pred.load_state_dict(h.pred.state_dict())
                self.preds.append(pred)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        size = feats[0].shape[2:]
        x = self.proj[0](feats[0])
        for proj, f in zip(self.proj[1:], feats[1:]):
            x = x + F.interpolate(proj(f), size=size, mode="bilinear", align_corners=False)
        x = F.relu(x)
        return [pred(part) for pred, part in zip(self.preds, torch.split(x, self.dims, dim=1))]


class FoldedSegFormer3D(nn.Module):
    """Inference-only twin of a SegFormer3D: same encoder, folded heads, same outputs."""

    def __init__(self, model: SegFormer3D) -> None:
        super().__init__()
        self.meta = model.meta
        self.model = model.eval()  # keeps encode(); its heads are simply not called
        self.heads = FoldedHeads(model).to(next(model.parameters()).device)
        self.has_depth = model.depth_head is not None

    def forward(self, x: torch.Tensor) -> SegFormerOutput:
        outs = self.heads(self.model.encode(x))
        return SegFormerOutput(outs[0], outs[1] if self.has_depth else None)


def fold(model: SegFormer3D) -> FoldedSegFormer3D:
    return FoldedSegFormer3D(model).eval()
