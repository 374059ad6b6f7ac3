"""`eval --save DIR`: one picture per frame scored, so that a person can look at what the figures say.

A 2 x 2 grid per frame: the image and the ground truth on top, the prediction and its error below. Depth:
ground truth and the median-scaled prediction in the same log-depth colours (the ground truth's 2nd-98th
percentile; pixels without ground truth black), error = |pred - gt| / gt from 0 (dark) to 0.5 and beyond
(bright). Segmentation (when the frame has labels and no depth): labels and prediction in the palette, wrong
pixels red. Each panel names itself; the picture's name is the frame's.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..pipeline.render import colormap_lut, colorize_classes, draw_hud, robust_depth_range

ERROR_MAX = 0.5  # abs rel error drawn in the brightest colour


def _log_depth_rgb(depth: np.ndarray, valid: np.ndarray, near: float, far: float) -> np.ndarray:
    lut = colormap_lut("turbo")
    lo, hi = np.log(max(near, 1e-3)), np.log(max(far, near * 1.01, 1e-3))
    t = (hi - np.log(np.where(valid, depth, far).clip(1e-3))) / max(hi - lo, 1e-6)  # near -> 1 (warm)
    rgb = lut[np.clip(np.rint(t * 255), 0, 255).astype(np.uint8)]
    rgb[~valid] = 0
    return rgb


def _error_rgb(error: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lut = colormap_lut("inferno")
    rgb = lut[np.clip(np.rint(error / ERROR_MAX * 255), 0, 255).astype(np.uint8)]
    rgb[~valid] = 0
    return rgb


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    return draw_hud(np.ascontiguousarray(panel), [text])


def depth_grid(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, scale: float, abs_rel: float) -> np.ndarray:
    """image, pred (as predicted, metres), gt (0 = none): H x W each -> 2H x 2W x 3 uint8 RGB."""
    valid = np.isfinite(gt) & (gt > 0)
    near, far = robust_depth_range(gt, valid) if valid.any() else (1.0, 80.0)
    scaled = pred * scale
    error = np.where(valid, np.abs(scaled - gt) / np.where(valid, gt, 1.0), 0.0)
    top = np.concatenate([_label(image.copy(), "image"),
                          _label(_log_depth_rgb(gt, valid, near, far), f"ground truth {near:.1f}-{far:.1f} m")], 1)
    bottom = np.concatenate([
        _label(_log_depth_rgb(scaled, np.ones_like(valid), near, far), f"prediction x{scale:.2f} (median-scaled)"),
        _label(_error_rgb(error, valid), f"|error| / depth, 0-{ERROR_MAX:g}: mean {abs_rel:.3f}")], 1)
    return np.concatenate([top, bottom], 0)


def seg_grid(image: np.ndarray, pred: np.ndarray, labels: np.ndarray, palette: np.ndarray,
             ignore: int = 255) -> np.ndarray:
    """image, predicted and labelled ids (in the same label space; ``ignore`` = no label) -> 2H x 2W x 3."""
    known = labels != ignore
    wrong = known & (pred != labels)
    err = image.copy() // 3
    err[wrong] = (255, 0, 0)
    accuracy = 1.0 - wrong.sum() / max(1, known.sum())
    top = np.concatenate([_label(image.copy(), "image"), _label(colorize_classes(labels, palette), "labels")], 1)
    bottom = np.concatenate([_label(colorize_classes(pred, palette), "prediction"),
                             _label(err, f"wrong pixels (red): accuracy {accuracy:.3f}")], 1)
    return np.concatenate([top, bottom], 0)


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path.name}")
    path.write_bytes(data.tobytes())
