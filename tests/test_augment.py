"""Augmentation keeps image, labels and depth aligned, never invents label or depth values, is reproducible."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segformer3d_rt.data.augment import Augment, resize_nearest, to_tensors
from segformer3d_rt.data.datasets import Sample

# Corners of the RGB cube except black (kept for the padding).
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [255, 0, 255], [0, 255, 255], [255, 255, 255]], dtype=np.uint8)
DEPTH_OF_CLASS = np.array([1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5], dtype=np.float32)

GEOMETRY_ONLY = dict(color_jitter=False, blur=False, noise=False)
PHOTOMETRY_ALWAYS = dict(jitter_prob=1.0, blur_prob=1.0, noise_prob=1.0)


def _block_sample(seed: int, h: int = 40, w: int = 60) -> Sample:
    """Random blocks (3..8 px) of palette colours; label and depth are functions of the colour."""
    rng = np.random.default_rng(seed)
    ys = np.cumsum(rng.integers(3, 9, h))
    xs = np.cumsum(rng.integers(3, 9, w))
    grid = rng.integers(0, len(PALETTE), (h, w))
    labels = grid[np.searchsorted(ys, np.arange(h), side="right")][:, np.searchsorted(xs, np.arange(w), side="right")]
    labels = labels.astype(np.uint8)
    return Sample(image=PALETTE[labels], labels=labels, depth=DEPTH_OF_CLASS[labels], name=f"blocks-{seed}")


def _stripes_sample(seed: int, h: int = 40, w: int = 60) -> Sample:
    """R = 0/255 column stripes, G = 0/255 row stripes (3..8 px), B = 255 (padding is black).

    The class is 2 * (R is 255) + (G is 255). Bilinear/area resampling is separable, so a resampled R
    depends on one row of stripes only: the nearest source pixel is the one with the larger weight,
    i.e. R > 127.5 exactly when the nearest column is a 255 one (likewise G and rows)."""
    rng = np.random.default_rng(seed)

    def bits(n: int) -> np.ndarray:
        edges = np.cumsum(rng.integers(3, 9, n))
        return (np.searchsorted(edges, np.arange(n), side="right") % 2).astype(np.uint8)

    col, row = bits(w), bits(h)
    image = np.empty((h, w, 3), np.uint8)
    image[..., 0] = col[None, :] * 255
    image[..., 1] = row[:, None] * 255
    image[..., 2] = 255
    labels = (2 * col[None, :] + row[:, None]).astype(np.uint8)
    return Sample(image=image, labels=labels, depth=DEPTH_OF_CLASS[labels], name=f"stripes-{seed}")


def test_labels_and_depth_follow_the_image():
    aug = Augment(out_size=(32, 48), scale=(0.5, 2.0), flip=True, **GEOMETRY_ONLY)
    checked = total = 0
    for seed in range(25):
        out = aug(_stripes_sample(seed), np.random.default_rng(seed))
        r, g = out.image[..., 0].astype(float), out.image[..., 1].astype(float)
        content = out.image[..., 2] > 0
        # near 50/50 blends the larger weight is not readable from the colour: skip those
        clear = content & (np.abs(r - 127.5) > 16) & (np.abs(g - 127.5) > 16)
        expected = 2 * (r > 127.5) + (g > 127.5)
        np.testing.assert_array_equal(out.labels[clear], expected[clear])
        np.testing.assert_array_equal(out.depth[clear], DEPTH_OF_CLASS[expected[clear]])
        assert (out.labels[~content] == 255).all() and (out.depth[~content] == 0).all()
        checked += int(clear.sum())
        total += clear.size
    assert checked > 0.6 * total  # the check is not vacuous


def test_nearest_resize_is_pixel_centre_aligned():
    # 4 -> 8 px: each source pixel becomes two; 8 -> 3: centres 1.33, 4, 6.67 -> sources 1, 4, 6
    assert resize_nearest(np.arange(4)[None], (1, 8)).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]]
    assert resize_nearest(np.arange(8)[None], (1, 3)).tolist() == [[1, 4, 6]]


def test_flip_exact():
    s = _block_sample(1)
    aug = Augment(out_size=s.labels.shape, scale=(1.0, 1.0), flip=True, flip_prob=1.0, **GEOMETRY_ONLY)
    out = aug(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, s.image[:, ::-1])
    np.testing.assert_array_equal(out.labels, s.labels[:, ::-1])
    np.testing.assert_array_equal(out.depth, s.depth[:, ::-1])


def test_crop_is_one_window_of_all_three():
    h, w = 30, 50
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)  # colour = coordinates
    s = Sample(image=image, labels=((yy * 7 + xx) % 19).astype(np.uint8),
               depth=(yy * 100 + xx).astype(np.float32), name="coords")
    aug = Augment(out_size=(12, 20), scale=(1.0, 1.0), flip=False, **GEOMETRY_ONLY)
    offsets = set()
    for seed in range(5):
        out = aug(s, np.random.default_rng(seed))
        y0, x0 = int(out.image[0, 0, 0]), int(out.image[0, 0, 1])
        offsets.add((y0, x0))
        np.testing.assert_array_equal(out.image, image[y0:y0 + 12, x0:x0 + 20])
        np.testing.assert_array_equal(out.labels, s.labels[y0:y0 + 12, x0:x0 + 20])
        np.testing.assert_array_equal(out.depth, s.depth[y0:y0 + 12, x0:x0 + 20])
    assert len(offsets) > 1  # the crop is random


def test_pad_values():
    s = _block_sample(2, h=10, w=12)
    out = Augment(out_size=(16, 20), scale=(1.0, 1.0), flip=False, **GEOMETRY_ONLY)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image[:10, :12], s.image)
    np.testing.assert_array_equal(out.labels[:10, :12], s.labels)
    assert (out.labels[10:] == 255).all() and (out.labels[:, 12:] == 255).all()
    assert (out.depth[10:] == 0).all() and (out.depth[:, 12:] == 0).all()
    assert (out.image[10:] == 0).all()


def test_label_and_depth_values_never_interpolated():
    rng = np.random.default_rng(3)
    h, w = 37, 53
    labels = rng.choice(np.array([3, 9, 17], np.uint8), (h, w))
    depth = rng.choice(np.array([0.0, 2.5, 10.0], np.float32), (h, w))  # many invalid zeros
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = Sample(image=image, labels=labels, depth=depth, name="noise")
    aug = Augment(out_size=(29, 41), scale=(0.5, 2.0), **PHOTOMETRY_ALWAYS)
    for seed in range(10):
        out = aug(s, np.random.default_rng(seed))
        assert set(np.unique(out.labels).tolist()) <= {3, 9, 17, 255}
        assert set(np.unique(out.depth).tolist()) <= {0.0, 2.5, 10.0}


def test_depth_follows_scale_option():
    s = _block_sample(4)
    aug = Augment(out_size=(40, 60), scale=(2.0, 2.0), depth_follows_scale=True, flip=False, **GEOMETRY_ONLY)
    out = aug(s, np.random.default_rng(0))
    assert set(np.unique(out.depth).tolist()) <= set((DEPTH_OF_CLASS / 2).tolist())


def test_photometric_ops_touch_the_image_only():
    s = _block_sample(5)
    aug = Augment(out_size=s.labels.shape, scale=(1.0, 1.0), flip=False, **PHOTOMETRY_ALWAYS)
    out = aug(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.labels, s.labels)
    np.testing.assert_array_equal(out.depth, s.depth)
    assert out.image.dtype == np.uint8 and out.image.shape == s.image.shape
    assert np.abs(out.image.astype(int) - s.image).mean() > 5


@pytest.mark.parametrize("size", [(20, 30), (64, 96), (33, 200)])
def test_fixed_output_shape_and_types(size):
    s = _block_sample(6, *size)
    out = Augment(out_size=(32, 48), **PHOTOMETRY_ALWAYS)(s, np.random.default_rng(1))
    assert out.image.shape == (32, 48, 3) and out.image.dtype == np.uint8
    assert out.labels.shape == (32, 48) and out.labels.dtype == np.uint8
    assert out.depth.shape == (32, 48) and out.depth.dtype == np.float32
    assert out.name == s.name


def test_same_seed_same_output_and_missing_targets():
    s = _block_sample(7)
    aug = Augment(out_size=(24, 36), **PHOTOMETRY_ALWAYS)
    a, b = aug(s, np.random.default_rng(11)), aug(s, np.random.default_rng(11))
    c = aug(s, np.random.default_rng(12))
    for x, y in ((a.image, b.image), (a.labels, b.labels), (a.depth, b.depth)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.image, c.image)
    bare = aug(Sample(image=s.image, labels=None, depth=None, name="x"), np.random.default_rng(11))
    np.testing.assert_array_equal(bare.image, a.image)  # same draws whether targets exist or not
    assert bare.labels is None and bare.depth is None


def test_to_tensors():
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 0] = 255
    s = Sample(image=image, labels=np.full((2, 3), 4, np.uint8), depth=np.full((2, 3), 2.5, np.float32), name="t")
    x, y, d = to_tensors(s, mean=(0.5, 0.5, 0.25), std=(0.25, 0.5, 0.25))
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    # (1 - 0.5) / 0.25 = 2, (1 - 0.5) / 0.5 = 1, (1 - 0.25) / 0.25 = 3; zeros: -2, -1, -1
    assert x[:, 0, 0].tolist() == pytest.approx([2.0, 1.0, 3.0])
    assert x[:, 1, 2].tolist() == pytest.approx([-2.0, -1.0, -1.0])
    assert y.dtype == torch.long and y.shape == (2, 3) and (y == 4).all()
    assert d.dtype == torch.float32 and d.shape == (1, 2, 3) and (d == 2.5).all()
    _, y, d = to_tensors(Sample(image=image, labels=None, depth=None, name="t"), (0, 0, 0), (1, 1, 1))
    assert (y == 255).all() and y.shape == (2, 3) and (d == 0).all() and d.shape == (1, 2, 3)
