"""Class maps from stride-4 logits: bilinear upsampling then argmax, computed only where it can matter.

A bilinearly upsampled logit vector is a convex combination of its (up to) four low-resolution neighbours.
Where those neighbours all have the same argmax, the combination has it too (c beats every k in each term,
so it beats k in the weighted sum). Only pixels whose neighbours disagree - the class boundaries, typically
a tenth of the image - need the interpolated logits. Same result as ``F.interpolate(...).argmax(1)`` (up to
exact ties), several times faster on CPU. On CUDA the dense version is used: it is cheap there and has no
data-dependent shapes, which CUDA graphs require.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The reference: B x K x h x w logits -> B x H x W uint8 classes."""
    up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(dim=1).to(torch.uint8)


def _source_coords(n_out: int, n_in: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear (align_corners=False) source indices i0, i1 and weight of i1 for each output index."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, src - i0.float()


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x K x h x w logits -> B x H x W uint8 class map, as ``dense_upsample_argmax``."""
    if logits.device.type != "cpu":
        return dense_upsample_argmax(logits, size)
    logits = logits.float()
    h, w = logits.shape[2:]
    H, W = size
    y0, y1, wy = _source_coords(H, h, logits.device)
    x0, x1, wx = _source_coords(W, w, logits.device)
    flat = logits.permute(0, 2, 3, 1).contiguous()  # B x h x w x K: argmax over the contiguous last dim is 5x faster
    low = flat.argmax(dim=3).to(torch.uint8)  # B x h x w
    # a low-res cell (i, j) is "mixed" when its neighbours (i|i+1, j|j+1), clamped at the edges, disagree
    right = torch.cat([low[:, :, 1:], low[:, :, -1:]], dim=2)
    below = torch.cat([low[:, 1:], low[:, -1:]], dim=1)
    diag = torch.cat([right[:, 1:], right[:, -1:]], dim=1)
    cell_mixed = (low != right) | (low != below) | (low != diag)
    # every output pixel reads the cell at (y0, x0): its neighbours are exactly that cell's
    out = low.index_select(1, y0).index_select(2, x0)
    mixed = cell_mixed.index_select(1, y0).index_select(2, x0)
    bi, yi, xi = mixed.nonzero(as_tuple=True)
    if bi.numel():
        ya, yb, xa, xb = y0[yi], y1[yi], x0[xi], x1[xi]
        ly, lx = wy[yi, None], wx[xi, None]
        top = flat[bi, ya, xa] * (1 - lx) + flat[bi, ya, xb] * lx
        bottom = flat[bi, yb, xa] * (1 - lx) + flat[bi, yb, xb] * lx
        out[bi, yi, xi] = (top * (1 - ly) + bottom * ly).argmax(dim=1).to(torch.uint8)
    return out
