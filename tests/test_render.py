"""Render stage: class/depth colouring, blending, layouts, legend/HUD, and the torch path vs numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segformer3d_rt.pipeline.render import (
    COLORMAPS,
    VIEWS,
    RenderStyle,
    colorize_classes,
    colorize_depth,
    colormap_lut,
    draw_hud,
    draw_legend,
    render_frame,
    robust_depth_range,
)
from segformer3d_rt.pipeline.render_torch import TorchRenderer

PALETTE = np.array([[128, 64, 128], [70, 130, 180], [220, 20, 60], [0, 0, 142], [250, 170, 30]], dtype=np.uint8)
NAMES = ("road", "sky", "person", "car", "traffic light")
H, W = 96, 160


def style(**kw) -> RenderStyle:
    return RenderStyle(palette=PALETTE, class_names=NAMES, **kw)


def plain(**kw) -> RenderStyle:
    """No text at all: the pixels are pure colouring/blending."""
    return style(legend=False, hud=False, **kw)


@pytest.fixture
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    classes = rng.integers(0, len(PALETTE), (H // 4, W // 4), dtype=np.uint8)
    depth = rng.uniform(1.0, 80.0, (H // 4, W // 4)).astype(np.float32)
    return image, classes, depth


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------- classes


def test_colorize_classes_maps_ids_to_palette_and_unknown_to_black() -> None:
    classes = np.array([[0, 2], [255, 4]], dtype=np.uint8)
    out = colorize_classes(classes, PALETTE)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], PALETTE[0])
    np.testing.assert_array_equal(out[0, 1], PALETTE[2])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 0])  # 255 = ignore
    np.testing.assert_array_equal(out[1, 1], PALETTE[4])
    # ids >= K that are not 255 are black too, and wider integer dtypes work
    np.testing.assert_array_equal(colorize_classes(np.array([[5, 300]], dtype=np.int64), PALETTE), 0)


# ----------------------------------------------------------------------------- depth


def test_turbo_near_is_red_far_is_blue() -> None:
    depth = np.array([[1.0, 10.0]], dtype=np.float32)
    out = colorize_depth(depth, (1.0, 10.0), "turbo").astype(int)
    near, far = out[0, 0], out[0, 1]
    assert near[0] > far[0], (near, far)  # red
    assert far[2] > near[2], (near, far)  # blue


@pytest.mark.parametrize("name", ["magma", "plasma", "inferno", "viridis"])
def test_perceptual_maps_near_is_bright(name: str) -> None:
    depth = np.array([[2.0, 5.0, 9.0]], dtype=np.float32)
    lum = luminance(colorize_depth(depth, (2.0, 9.0), name)[0])
    assert lum[0] > lum[1] > lum[2]


def test_all_colormaps_are_rgb_luts() -> None:
    assert {"turbo", "magma", "plasma", "inferno", "viridis"} <= set(COLORMAPS)
    for name in COLORMAPS:
        lut = colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    # RGB, not cv2's BGR: turbo's near end is dark red, magma's near end is pale yellow (B lowest)
    assert colormap_lut("turbo")[255, 0] > colormap_lut("turbo")[255, 2]
    assert colormap_lut("magma")[255, 2] < colormap_lut("magma")[255, 0]


def test_invalid_depth_is_black() -> None:
    depth = np.array([[0.0, -3.0, np.nan, np.inf, 4.0]], dtype=np.float32)
    out = colorize_depth(depth, None, "magma")
    np.testing.assert_array_equal(out[0, :4], 0)
    assert out[0, 4].any()
    np.testing.assert_array_equal(colorize_depth(np.zeros((3, 3), np.float32)), 0)  # nothing valid


def test_fixed_range_gives_same_colour_in_different_frames() -> None:
    a = np.array([[5.0, 1.0, 2.0]], dtype=np.float32)
    b = np.array([[5.0, 40.0, 70.0]], dtype=np.float32)
    ca, cb = colorize_depth(a, (1.0, 50.0)), colorize_depth(b, (1.0, 50.0))
    np.testing.assert_array_equal(ca[0, 0], cb[0, 0])
    # whereas the per-frame range colours the same value differently
    assert not np.array_equal(colorize_depth(a)[0, 0], colorize_depth(b)[0, 0])


def test_robust_range_is_2nd_to_98th_percentile_of_valid_pixels() -> None:
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 30.0, (37, 53)).astype(np.float32)
    depth[:3] = 0.0
    depth[5, 5] = np.nan
    valid = depth[np.isfinite(depth) & (depth > 0)]
    near, far = robust_depth_range(depth)
    np.testing.assert_allclose([near, far], np.percentile(valid.astype(np.float64), [2, 98]), rtol=1e-5)


# ----------------------------------------------------------------------------- frames


def test_overlay_is_alpha_blend(inputs) -> None:
    image, classes, _ = inputs
    for alpha in (0.5, 0.3):
        out = render_frame(image, classes, None, plain(alpha=alpha))
        colour = colorize_classes(np.repeat(np.repeat(classes, 4, 0), 4, 1), PALETTE)
        expected = (1 - alpha) * image.astype(np.float64) + alpha * colour
        assert np.abs(out - expected).max() <= 0.51 + 1e-6


@pytest.mark.parametrize("view", VIEWS)
def test_output_shapes(inputs, view: str) -> None:
    image, classes, depth = inputs
    want = {"overlay": (H, W), "seg": (H, W), "depth": (H, W), "side-by-side": (H, 2 * W), "grid": (2 * H, 2 * W)}
    out = render_frame(image, classes, depth, style(view=view), hud_lines=["12.3 FPS"])
    assert out.shape == (*want[view], 3) and out.dtype == np.uint8


def test_missing_depth(inputs) -> None:
    image, classes, _ = inputs
    with pytest.raises(ValueError, match="depth"):
        render_frame(image, classes, None, plain(view="depth"))
    grid = render_frame(image, classes, None, plain(view="grid"))
    assert grid.shape == (2 * H, 2 * W, 3)
    panel = grid[H:, :W]  # depth panel: the frame with a centred note
    differs = np.any(panel != image, axis=-1)
    assert differs.any()
    ys, xs = np.nonzero(differs)
    assert ys.min() > H // 5 and ys.max() < H - H // 5  # only the note, not a colour map
    sbs = render_frame(image, classes, None, plain(view="side-by-side"))
    assert np.any(sbs[:, W:] != image)


def test_quarter_resolution_classes_upsample_nearest(inputs) -> None:
    image, classes, _ = inputs
    out = render_frame(image, classes, None, plain(view="seg"))
    assert {tuple(c) for c in out.reshape(-1, 3)} <= {tuple(c) for c in PALETTE}  # no blended colours
    np.testing.assert_array_equal(out, colorize_classes(np.repeat(np.repeat(classes, 4, 0), 4, 1), PALETTE))


def test_non_integer_scale_classes_stay_in_palette(inputs) -> None:
    image, _, _ = inputs
    classes = np.random.default_rng(2).integers(0, len(PALETTE), (37, 61), dtype=np.uint8)
    out = render_frame(image, classes, None, plain(view="seg"))
    assert {tuple(c) for c in out.reshape(-1, 3)} <= {tuple(c) for c in PALETTE}


def test_depth_resize_is_linear_and_ignores_invalid() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    depth = np.tile(np.linspace(1, 10, 10, dtype=np.float32), (10, 1))
    depth[:, 9] = 0.0  # invalid right column must not pull its neighbours towards 0 ("near")
    st = plain(view="depth", depth_range=(1.0, 10.0))
    out = render_frame(image, None, depth, st)
    assert (out[:, 36:] == 0).all()  # mostly-invalid interpolation weight: black
    # column 35 has 5/8 of its weight on source column 8 (9.0) and 3/8 on the invalid one
    np.testing.assert_array_equal(out[20, 35], colorize_depth(np.array([[9.0]], np.float32), (1.0, 10.0))[0, 0])
    assert len(np.unique(out[20, :30], axis=0)) > 10  # a smooth ramp, not 10 nearest blocks


def test_legend_pixels_only_with_legend(inputs) -> None:
    image, classes, _ = inputs
    big = np.full((H, W, 3), 90, np.uint8)
    off = render_frame(big, classes, None, style(view="seg", legend=False, hud=False))
    on = render_frame(big, classes, None, style(view="seg", legend=True, hud=False))
    np.testing.assert_array_equal(off, colorize_classes(np.repeat(np.repeat(classes, 4, 0), 4, 1), PALETTE))
    changed = np.any(on != off, axis=-1)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    assert ys.min() >= H // 2 and xs.min() >= W // 2  # bottom-right corner only


def test_legend_lists_only_present_classes() -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    one = draw_legend(img.copy(), [1], style())
    three = draw_legend(img.copy(), [1, 0, 2], style())
    rows_one = np.any(one != 0, axis=(1, 2)).sum()
    rows_three = np.any(three != 0, axis=(1, 2)).sum()
    assert 0 < rows_one < rows_three
    # the swatch uses the palette colour (RGB order preserved)
    assert np.all(one == PALETTE[1], axis=-1).any()
    np.testing.assert_array_equal(draw_legend(img.copy(), [], style()), img)
    np.testing.assert_array_equal(draw_legend(img.copy(), [99], style()), img)  # unknown id: nothing


def test_legend_drawn_in_composite_views(inputs) -> None:
    image, classes, depth = inputs
    for view in ("side-by-side", "grid"):
        off = render_frame(image, classes, depth, style(view=view, legend=False, hud=False))
        on = render_frame(image, classes, depth, style(view=view, legend=True, hud=False))
        assert np.any(on != off), view


def test_hud(inputs) -> None:
    image, classes, _ = inputs
    off = render_frame(image, classes, None, style(legend=False, hud=False))
    hidden = render_frame(image, classes, None, style(legend=False, hud=False), hud_lines=["12.3 FPS"])
    on = render_frame(image, classes, None, style(legend=False, hud=True), hud_lines=["12.3 FPS", "latency 85 ms"])
    np.testing.assert_array_equal(off, hidden)
    ys, xs = np.nonzero(np.any(on != off, axis=-1))
    assert len(ys) and ys.max() < H // 2 and xs.max() < W * 3 // 4  # top-left
    blank = np.zeros((50, 50, 3), np.uint8)
    np.testing.assert_array_equal(draw_hud(blank.copy(), []), blank)


def test_input_frame_is_not_modified(inputs) -> None:
    image, classes, depth = inputs
    before = image.copy()
    for view in VIEWS:
        render_frame(image, classes, depth, style(view=view), hud_lines=["x"])
    np.testing.assert_array_equal(image, before)


def test_style_validation() -> None:
    with pytest.raises(ValueError):
        style(view="nope")
    with pytest.raises(ValueError):
        style(colormap="nope")
    with pytest.raises(ValueError):
        style(depth_range=(5.0, 1.0))
    with pytest.raises(ValueError):
        style(alpha=1.5)
    s = RenderStyle(palette=tuple(map(tuple, PALETTE.tolist())), class_names=list(NAMES), depth_range=[1, 2])
    assert s.palette.dtype == np.uint8 and s.depth_range == (1.0, 2.0) and isinstance(s.class_names, tuple)


# ----------------------------------------------------------------------------- torch path


def random_scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-integer scales and invalid depth pixels: the hard cases for agreement."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    classes = rng.integers(0, len(PALETTE), (37, 61), dtype=np.uint8)
    classes[0, 0] = 255
    depth = rng.uniform(0.5, 60.0, (23, 41)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = 0.0
    depth[3, 4] = np.nan
    return image, classes, depth


def assert_close_levels(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(int) - b.astype(int))
    # float rounding at an exact colour-map index boundary can move one index (<= 2 levels here)
    assert diff.max() <= 2, diff.max()
    assert (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("depth_range", [None, (2.0, 40.0)])
def test_torch_matches_numpy(view: str, depth_range) -> None:
    image, classes, depth = random_scene(3)
    st = plain(view=view, alpha=0.4, colormap="turbo", depth_range=depth_range)
    want = render_frame(image, classes, depth, st)
    got = TorchRenderer(st, "cpu")(torch.from_numpy(image), torch.from_numpy(classes), torch.from_numpy(depth))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
    assert_close_levels(got.numpy(), want)


@pytest.mark.parametrize("view", ["side-by-side", "grid"])
def test_torch_render_with_text_and_missing_depth(view: str) -> None:
    image, classes, depth = random_scene(4)
    st = style(view=view, colormap="magma")
    r = TorchRenderer(st, "cpu")
    for d in (depth, None):
        want = render_frame(image, classes, d, st, hud_lines=["9.9 FPS"])
        got = r.render(torch.from_numpy(image), torch.from_numpy(classes),
                       None if d is None else torch.from_numpy(d), hud_lines=["9.9 FPS"])
        assert isinstance(got, np.ndarray)
        assert_close_levels(got, want)


def test_torch_batched_equals_single() -> None:
    scenes = [random_scene(s) for s in (5, 6)]
    st = plain(view="grid")
    r = TorchRenderer(st, "cpu")
    batch = r(*(torch.from_numpy(np.stack(x)) for x in zip(*scenes)))
    assert batch.shape == (2, 2 * H, 2 * W, 3)
    for i, (image, classes, depth) in enumerate(scenes):
        single = r(torch.from_numpy(image), torch.from_numpy(classes), torch.from_numpy(depth))
        torch.testing.assert_close(batch[i], single, rtol=0, atol=0)


def test_torch_depth_view_needs_depth() -> None:
    image, classes, _ = random_scene(7)
    with pytest.raises(ValueError, match="depth"):
        TorchRenderer(plain(view="depth"))(torch.from_numpy(image), torch.from_numpy(classes), None)


@pytest.mark.cuda
@pytest.mark.parametrize("view", VIEWS)
def test_torch_cuda_matches_numpy(view: str) -> None:
    image, classes, depth = random_scene(8)
    st = style(view=view)
    want = render_frame(image, classes, depth, st, hud_lines=["1 FPS"])
    r = TorchRenderer(st, "cuda")
    canvas = r(torch.from_numpy(image).cuda(), torch.from_numpy(classes).cuda(), torch.from_numpy(depth).cuda())
    assert canvas.device.type == "cuda"
    got = r.render(torch.from_numpy(image).cuda(), torch.from_numpy(classes), torch.from_numpy(depth),
                   hud_lines=["1 FPS"])
    assert_close_levels(got, want)


def test_class_counts_match_numpy_per_frame() -> None:
    from segformer3d_rt.pipeline.render_torch import class_counts

    rng = np.random.default_rng(3)
    classes = rng.integers(0, 19, size=(3, 17, 23), dtype=np.uint8)
    classes[1] = 255  # the ignore id, the top of the table
    got = class_counts(torch.from_numpy(classes)).numpy()
    for i in range(3):
        np.testing.assert_array_equal(got[i], np.bincount(classes[i].ravel(), minlength=256))


@pytest.mark.cuda
@pytest.mark.parametrize("view", VIEWS)
def test_torch_cuda_canvas_never_syncs(view: str) -> None:
    """Drawing on the device waits for nothing on the host (a sync per frame stalls the inference stream):
    torch raises on any synchronising call in this mode. Only the final download may sync."""
    image, classes, depth = random_scene(9)
    r = TorchRenderer(style(view=view), "cuda")
    args = [torch.from_numpy(x).cuda() for x in (image, classes, depth)]
    r(*args)  # first call: look-up tables uploaded
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        canvas = r(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert canvas.device.type == "cuda"
