"""Training losses: cross-entropy with the ignore label (per class, or on the summed probability of a label's
set of classes), and depth losses over valid pixels only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.metadata import DepthSpec

DEPTH_LOSSES = ("log-l1", "l1", "berhu", "silog", "mse")


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy at label resolution (logits are upsampled; labels are never interpolated)."""
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0  # keeps the graph; a crop of pure void teaches nothing
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


def set_loss(logits: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor | None,
             ignore_index: int = 255, label_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy where label l stands for a set of classes: -log(sum of the set's probabilities).

    membership: L x K bool (label l covers class k), or None for one label per class (plain cross-entropy).
    A pixel labelled "car" whose prediction is "truck" costs nothing when the set holds both.
    label_weights: optional L weights (rare classes up); the loss is the weighted mean over pixels.
    """
    if membership is None and label_weights is None:
        return seg_loss(logits, labels, ignore_index)
    if membership is None:
        membership = torch.eye(logits.shape[1], dtype=torch.bool)
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = labels != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    if labels[valid].max() >= membership.shape[0]:
        raise ValueError(f"label id {int(labels[valid].max())} outside the label set table ({membership.shape[0]})")
    logp = F.log_softmax(logits, dim=1).permute(0, 2, 3, 1)[valid]  # N x K
    allowed = membership.to(logp.device)[labels[valid].long()]  # N x K
    # logsumexp over the set only: exact (no probability underflow) and equal to cross-entropy for singletons
    nll = -torch.logsumexp(logp.masked_fill(~allowed, float("-inf")), dim=1)
    if label_weights is None:
        return nll.mean()
    w = label_weights.to(nll.device, nll.dtype)[labels[valid].long()]
    return (w * nll).sum() / w.sum()


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


def scale_invariant_loss(raw: torch.Tensor, depth: torch.Tensor, spec: DepthSpec) -> torch.Tensor:
    """Log-L1 after the best per-image scale: mean |log pred - log gt - median|, image by image.

    For relative targets (known up to one factor per image, e.g. pop-up depth from labels): any scale of the
    right structure costs nothing; the median is the L1-optimal log-offset, so none is learnt from here."""
    raw = F.interpolate(raw.float(), size=depth.shape[-2:], mode="bilinear", align_corners=False)
    losses = []
    for r, d in zip(raw, depth):
        valid = d > 0
        if valid.sum() < 2:
            continue
        g = spec.to_depth(r[valid]).clamp_min(1e-3).log() - d[valid].log()
        losses.append((g - g.detach().median()).abs().mean())
    if not losses:
        return raw.sum() * 0.0
    return torch.stack(losses).mean()
