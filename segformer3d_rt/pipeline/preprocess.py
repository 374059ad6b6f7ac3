"""Preprocess: source frame -> model-sized uint8 RGB tensor (normalisation happens on the device)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..runtime.sizes import model_input_size
from .frames import Frame

__all__ = ["Preprocessor", "model_input_size", "shrink"]


def shrink(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Anti-aliased downscale. An integer box filter first (cv2's INTER_AREA has a fast path for exact integer
    factors), then bilinear for the remaining factor below 2: at 1280x720 -> 448x256 this is 5x faster than one
    INTER_AREA of a fractional factor, within one grey level of it on average."""
    h, w = size_hw
    src_h, src_w = img.shape[:2]
    k = int(min(src_h / h, src_w / w))
    if k >= 2 and src_h % k == 0 and src_w % k == 0:
        img = cv2.resize(img, (src_w // k, src_h // k), interpolation=cv2.INTER_AREA)
        if img.shape[:2] == (h, w):
            return img
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


class Preprocessor:
    """Resizes on the host (cv2, anti-aliased when shrinking) and hands over uint8 HWC tensors.

    Uploading uint8 (not float32) quarters the host-to-device traffic; the inference stage stages
    batches in its own reusable pinned buffers (see InferenceEngine.upload).
    """

    def __init__(self, box_hw: tuple[int, int], resize_on_device: bool = False) -> None:
        self.box_hw = box_hw
        self.resize_on_device = resize_on_device
        # Model input sizes used (the stats report lists them). Bounded by the box, not the run: one side
        # is always the box's, rounded, so there are at most box_h / 32 + box_w / 32 of them.
        self.sizes_seen: set[tuple[int, int]] = set()

    def input_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        size = model_input_size(frame_hw, self.box_hw)  # a few multiplications: not worth caching
        self.sizes_seen.add(size)
        return size

    def __call__(self, frame: Frame) -> torch.Tensor:
        h, w = self.input_size((frame.height, frame.width))
        img = frame.image
        if not self.resize_on_device and (h, w) != img.shape[:2]:
            if h < img.shape[0] and w < img.shape[1]:
                img = shrink(img, (h, w))
            else:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(img))
