"""Depth colours that hold still over a video: a smoothed range by default, --depth-range fixes it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segformer3d_rt.pipeline.config import RunConfig
from segformer3d_rt.errors import UserError
from segformer3d_rt.pipeline.render import (RenderStyle, SmoothedDepthRange, depth_panel, render_frame,
                                            robust_depth_range)
from segformer3d_rt.pipeline.render_torch import TorchRenderer


def _style(**kw) -> RenderStyle:
    return RenderStyle(palette=np.zeros((19, 3), np.uint8), class_names=tuple(map(str, range(19))), view="depth",
                       legend=False, hud=False, **kw)


def _cityscapes_style(**kw) -> RenderStyle:
    from segformer3d_rt.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    return RenderStyle(palette=np.array(CITYSCAPES_PALETTE, np.uint8), class_names=CITYSCAPES_CLASSES, view="depth",
                       legend=False, hud=False, **kw)


def test_the_sky_is_never_drawn_near():
    """A network that puts the sky at 1 m: drawn in the far colour, and left out of the colour range."""
    from segformer3d_rt.pipeline.render import colormap_lut, frame_depth_range

    depth = np.tile(np.linspace(5.0, 40.0, 16, dtype=np.float32)[:, None], (1, 24))  # rows: near at the top
    depth[:4] = 1.0  # the sky, predicted as the nearest thing in the scene
    classes = np.zeros((64, 96), np.uint8)  # road
    classes[:16] = 10  # sky (class map at 4x the depth resolution, like the model's)
    img = np.zeros((64, 96, 3), np.uint8)
    style = _cityscapes_style()
    out = render_frame(img, classes, depth, style)
    far_colour = colormap_lut("turbo")[0]
    assert (out[:16] == far_colour).all()
    assert frame_depth_range(depth, classes, style)[0] > 5.0 - 1e-6  # 1 m sky left out of the range
    plain = render_frame(img, classes, depth, _cityscapes_style(sky_far=False))
    assert not (plain[:16] == far_colour).all()  # without the rule, the sky would be drawn near
    torch_out = TorchRenderer(style).render(torch.from_numpy(img), torch.from_numpy(classes), torch.from_numpy(depth))
    assert np.abs(torch_out.astype(int) - out.astype(int)).max() <= 1
    ranges = TorchRenderer(style).frame_ranges(torch.from_numpy(depth), torch.from_numpy(classes))
    assert ranges[0] == pytest.approx(frame_depth_range(depth, classes, style))


def test_smoothed_range_moves_far_less_than_per_frame_ranges():
    rng = np.random.default_rng(0)
    smooth = SmoothedDepthRange(0.05)
    per_frame, smoothed = [], []
    for _ in range(300):  # a scene whose per-frame robust range jitters by +-30%
        near, far = 2.0 * rng.uniform(0.7, 1.3), 60.0 * rng.uniform(0.7, 1.3)
        per_frame.append(far)
        smoothed.append(smooth.update(near, far)[1])
    jitter = lambda x: np.abs(np.diff(np.log(x))).mean()  # noqa: E731
    assert jitter(smoothed[50:]) < 0.1 * jitter(per_frame[50:])
    assert np.exp(np.mean(np.log(smoothed[50:]))) == pytest.approx(60.0, rel=0.1)  # and it tracks the scene


def test_first_frame_uses_its_own_range_and_a_depthless_frame_keeps_the_colours():
    smooth = SmoothedDepthRange(0.05)
    assert smooth.update(3.0, 40.0) == pytest.approx((3.0, 40.0))
    assert smooth.update(0.0, 1.0) == pytest.approx((3.0, 40.0))  # (0, 1) is what a frame without depth gives
    with pytest.raises(ValueError):
        SmoothedDepthRange(0.0)


def test_a_given_range_replaces_the_per_frame_one_on_both_back_ends():
    d = np.linspace(1.0, 50.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    img = np.zeros((96, 128, 3), np.uint8)
    style = _style()
    fixed = (5.0, 20.0)
    out = render_frame(img, None, d, style, depth_range=fixed)
    assert np.array_equal(out, depth_panel(d, (96, 128), fixed, "turbo"))
    assert not np.array_equal(out, render_frame(img, None, d, style))
    torch_out = TorchRenderer(style).render(torch.from_numpy(img), None, torch.from_numpy(d), depth_range=fixed)
    assert np.abs(torch_out.astype(int) - out.astype(int)).max() <= 1


def test_torch_frame_ranges_match_numpy():
    d = np.random.default_rng(1).uniform(1, 80, (2, 30, 40)).astype(np.float32)
    ranges = TorchRenderer(_style()).frame_ranges(torch.from_numpy(d))
    for got, frame in zip(ranges, d):
        assert got == pytest.approx(robust_depth_range(frame))


def test_smoothing_setting_is_checked():
    with pytest.raises(UserError, match="'depth_smoothing' must be more than 0"):
        RunConfig(source="x", depth_smoothing=0.0).validate()
    with pytest.raises(UserError, match="--depth-smoothing must be"):  # named as the caller names it: the flag
        RunConfig(source="x", depth_smoothing=1.5).validate(lambda key: "--" + key.replace("_", "-"))
    assert RunConfig(source="x").depth_smoothing == 0.05
