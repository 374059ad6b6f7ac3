"""Training augmentation on :class:`~segformer3d_rt.data.datasets.Sample` and conversion to tensors.

Geometric ops (scale, crop/pad, flip) move image, labels and depth together; labels and depth are resampled
by nearest neighbour only (no new class ids, no depth blended with invalid zeros). Photometric ops
(colour jitter, blur, noise) touch the image only. All randomness comes from the generator passed in,
so a (seed, index) pair reproduces a sample exactly whatever the number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..runtime.normalize import normalize
from .datasets import IGNORE, Sample


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with pixel-centre alignment (same geometry as cv2's INTER_LINEAR).

    cv2's INTER_NEAREST maps dst x to floor(x * scale), half a pixel off the bilinear image; this one maps
    pixel centres to pixel centres, so labels stay on top of the resized image.
    """
    h, w = size
    src_h, src_w = arr.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * (src_h / h)).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (src_w / w)).astype(np.int64), src_w - 1)
    return arr[rows[:, None], cols[None, :]]


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    # INTER_AREA when shrinking avoids aliasing; both use pixel-centre alignment like resize_nearest
    interp = cv2.INTER_AREA if h < image.shape[0] and w < image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def _pad_to(arr: np.ndarray, size: tuple[int, int], value: float) -> np.ndarray:
    """Pad bottom/right up to at least ``size`` with a constant."""
    ph, pw = max(0, size[0] - arr.shape[0]), max(0, size[1] - arr.shape[1])
    if ph == 0 and pw == 0:
        return arr
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (arr.ndim - 2)
    return np.pad(arr, pad, mode="constant", constant_values=value)


def _rgb_to_gray(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Augment:
    """``augment(sample, rng) -> sample`` of size ``out_size`` (H, W). Every op can be switched off.

    scale: random zoom factor range relative to the input size (then random crop / pad to out_size).
    depth_follows_scale: divide depth by the zoom factor (a zoom by s looks like the scene s times closer);
        off by default: the measured depth is kept, as a longer focal length would see it.
    brightness/contrast/saturation: maximal relative change; hue: maximal shift as a fraction of the colour wheel.
    blur_sigma / noise_std (in 0..255 units) are drawn uniformly from their ranges when the op fires.
    """

    out_size: tuple[int, int]
    scale: tuple[float, float] = (0.5, 2.0)
    depth_follows_scale: bool = False
    image_pad: int = 0
    flip: bool = True
    flip_prob: float = 0.5
    color_jitter: bool = True
    jitter_prob: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    blur: bool = True
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise: bool = True
    noise_prob: float = 0.2
    noise_std: tuple[float, float] = (1.0, 8.0)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {self.scale}")
        if min(self.out_size) < 1:
            raise ValueError(f"out_size must be positive, got {self.out_size}")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample = self._scale(sample, rng)
        sample = self._crop(sample, rng)
        if self.flip and rng.random() < self.flip_prob:
            sample = _apply(sample, lambda a: np.ascontiguousarray(a[:, ::-1]))  # cv2 rejects negative strides
        image = sample.image
        if self.color_jitter and rng.random() < self.jitter_prob:
            image = self._jitter(image, rng)
        if self.blur and rng.random() < self.blur_prob:
            sigma = rng.uniform(*self.blur_sigma)
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
        if self.noise and rng.random() < self.noise_prob:
            std = rng.uniform(*self.noise_std)
            noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
            image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return replace(sample, image=image)

    # ------------------------------------------------------------------ geometric
    def _scale(self, sample: Sample, rng: np.random.Generator) -> Sample:
        lo, hi = self.scale
        s = rng.uniform(lo, hi) if hi > lo else lo
        if s == 1.0:
            return sample
        h, w = sample.image.shape[:2]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        depth = None if sample.depth is None else resize_nearest(sample.depth, size)
        if depth is not None and self.depth_follows_scale:
            depth = depth / np.float32(s)  # zeros stay zeros
        return replace(sample, image=_resize_image(sample.image, size),
                       labels=None if sample.labels is None else resize_nearest(sample.labels, size),
                       depth=depth)

    def _crop(self, sample: Sample, rng: np.random.Generator) -> Sample:
        oh, ow = self.out_size
        image = _pad_to(sample.image, self.out_size, self.image_pad)
        labels = None if sample.labels is None else _pad_to(sample.labels, self.out_size, IGNORE)
        depth = None if sample.depth is None else _pad_to(sample.depth, self.out_size, 0.0)
        h, w = image.shape[:2]
        y = int(rng.integers(0, h - oh + 1))
        x = int(rng.integers(0, w - ow + 1))
        window = (slice(y, y + oh), slice(x, x + ow))
        return replace(sample, image=np.ascontiguousarray(image[window]),
                       labels=None if labels is None else np.ascontiguousarray(labels[window]),
                       depth=None if depth is None else np.ascontiguousarray(depth[window]))

    # ------------------------------------------------------------------ photometric (image only)
    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = image.astype(np.float32) / 255.0
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        hue = rng.uniform(-self.hue, self.hue)
        img = np.clip(img * b, 0, 1)
        mean = _rgb_to_gray(img).mean()  # contrast pivots on the mean grey level, as torchvision does
        img = np.clip((img - mean) * c + mean, 0, 1)
        gray = _rgb_to_gray(img)[..., None]
        img = np.clip((img - gray) * s + gray, 0, 1)
        if hue != 0.0:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # float input: H in degrees [0, 360)
            hsv[..., 0] = (hsv[..., 0] + hue * 360.0) % 360.0
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _apply(sample: Sample, fn) -> Sample:
    return replace(sample, image=fn(sample.image),
                   labels=None if sample.labels is None else fn(sample.labels),
                   depth=None if sample.depth is None else fn(sample.depth))


def to_tensors(sample: Sample, mean: tuple[float, ...], std: tuple[float, ...]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (image 3 x H x W float, normalised as (x / 255 - mean) / std; labels H x W long; depth 1 x H x W float).

    Missing labels become all-ignore (255) and missing depth all-invalid (0), so batches always stack.
    """
    h, w = sample.image.shape[:2]
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float().div_(255.0)
    image = normalize(image, mean, std)
    if sample.labels is None:
        labels = torch.full((h, w), IGNORE, dtype=torch.long)
    else:
        labels = torch.from_numpy(np.ascontiguousarray(sample.labels)).long()
    if sample.depth is None:
        depth = torch.zeros((1, h, w), dtype=torch.float32)
    else:
        depth = torch.from_numpy(np.ascontiguousarray(sample.depth, dtype=np.float32)).unsqueeze(0)
    return image, labels, depth
