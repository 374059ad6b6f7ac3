"""Evaluation metrics accumulated over a whole data set (not averaged per image).

Segmentation: confusion matrix -> per-class IoU = TP / (TP + FP + FN), mIoU, pixel accuracy.
Depth: AbsRel, SqRel, RMSE, RMSElog and delta_k < 1.25^k over valid ground-truth pixels.
Both accept numpy arrays or torch tensors on any device; the per-pixel work stays on that device and
only a handful of numbers come back to the CPU per update.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import UserError

def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.from_numpy(np.ascontiguousarray(x))


def _check_shapes(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")


class SegMetrics:
    """Confusion-matrix segmentation metrics over ``num_classes`` classes.

    Pixels whose target is ``ignore_index`` are left out. Predictions outside [0, K) are wrong for
    every class (they are counted as false negatives of the target class, and as nobody's false positive).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        # Column K collects out-of-range predictions, so they still count against recall.
        self._conf = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """pred, target: integer class maps of equal shape (any leading dims)."""
        p, t = _as_tensor(pred), _as_tensor(target)
        _check_shapes(p, t)
        if p.is_floating_point() or t.is_floating_point():
            raise TypeError("SegMetrics expects integer class maps (take the argmax of logits first)")
        if t.device != p.device:
            t = t.to(p.device)
        k = self.num_classes
        p, t = p.reshape(-1).long(), t.reshape(-1).long()
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        bad = (t < 0) | (t >= k)
        if bool(bad.any()):
            value = int(t[bad][0])
            raise UserError(f"ground truth holds class id {value}, outside the model's {k} classes "
                            f"(ignore id {self.ignore_index}): wrong dataset for this model?")
        p = torch.where((p < 0) | (p >= k), torch.full_like(p, k), p)
        counts = torch.bincount(t * (k + 1) + p, minlength=k * (k + 1))
        self._conf += counts.cpu().numpy().reshape(k, k + 1)

    def compute(self) -> dict[str, Any]:
        """iou (K floats, NaN where TP+FP+FN == 0), miou, miou_present, pixel_accuracy,
        confusion (K x K, rows = ground truth, columns = prediction), out_of_range (per GT class),
        pixels (number of evaluated pixels)."""
        k = self.num_classes
        conf = self._conf[:, :k]
        tp = np.diag(conf).astype(np.float64)
        gt = self._conf.sum(axis=1).astype(np.float64)  # includes out-of-range predictions
        fp = conf.sum(axis=0) - tp
        union = gt + fp  # = TP + FP + FN
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        total = gt.sum()
        return {
            "iou": iou,
            "miou": _nanmean(iou),
            "miou_present": _nanmean(iou[gt > 0]),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "confusion": conf.copy(),
            "out_of_range": self._conf[:, k].copy(),
            "pixels": int(total),
        }


def _nanmean(values: np.ndarray) -> float:
    # np.nanmean warns on all-NaN input; an empty mean is simply undefined here.
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


# Order of the per-update sums; compute() turns them into the metrics.
_SUMS = ("abs_rel", "sq_rel", "sq", "sq_log", "delta1", "delta2", "delta3")


class DepthMetrics:
    """Standard monocular depth metrics over the valid pixels of the whole set.

    Valid: target finite, > min_depth and (when max_depth is given) <= max_depth.
    Predictions are clamped to >= min_depth so that the log and ratios stay defined.
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None) -> None:
        if min_depth <= 0:
            raise ValueError("min_depth must be > 0 (log and ratios need positive depths)")
        if max_depth is not None and max_depth <= min_depth:
            raise ValueError("max_depth must be > min_depth")
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        self._sums = np.zeros(len(_SUMS), dtype=np.float64)
        self._count = 0

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """pred, target: depth maps of equal shape, same unit (target 0 / NaN / inf = invalid)."""
        d, g = _as_tensor(pred), _as_tensor(target)
        _check_shapes(d, g)
        if d.device.type == "mps":  # MPS has no float64
            d = d.cpu()
        if g.device != d.device:
            g = g.to(d.device)
        # float64 on the device: sums over millions of pixels lose digits in float32
        d, g = d.reshape(-1).double(), g.reshape(-1).double()
        valid = torch.isfinite(g) & (g > self.min_depth)
        if self.max_depth is not None:
            valid &= g <= self.max_depth
        d, g = d[valid].clamp_min(self.min_depth), g[valid]
        n = int(g.numel())
        if n == 0:
            return
        diff = d - g
        ratio = torch.maximum(d / g, g / d)
        sums = torch.stack([
            (diff.abs() / g).sum(),
            (diff ** 2 / g).sum(),
            (diff ** 2).sum(),
            ((d.log() - g.log()) ** 2).sum(),
            (ratio < 1.25).sum().double(),
            (ratio < 1.25 ** 2).sum().double(),
            (ratio < 1.25 ** 3).sum().double(),
        ])
        self._sums += sums.cpu().numpy()
        self._count += n

    def compute(self) -> dict[str, float | int]:
        """abs_rel, sq_rel, rmse, rmse_log, delta1..3 (NaN when no valid pixel) and count."""
        n = self._count
        if n == 0:
            out: dict[str, float | int] = {k: math.nan for k in
                                           ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")}
            out["count"] = 0
            return out
        s = dict(zip(_SUMS, (float(v) for v in self._sums)))
        return {
            "abs_rel": s["abs_rel"] / n,
            "sq_rel": s["sq_rel"] / n,
            "rmse": math.sqrt(s["sq"] / n),
            "rmse_log": math.sqrt(s["sq_log"] / n),
            "delta1": s["delta1"] / n,
            "delta2": s["delta2"] / n,
            "delta3": s["delta3"] / n,
            "count": n,
        }
