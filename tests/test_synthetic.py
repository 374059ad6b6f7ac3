"""The procedural driving world: determinism, random access, label/depth consistency and exact geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest

from segformer3d_rt.synthetic import SyntheticFrame, SyntheticWorld, render_sample, sample_drive
from segformer3d_rt.synthetic.raster import FIRST_FACE_ID, GROUND_ID, TWO_SIDED, Camera, FaceBuilder, rasterize

SKY, IGNORE = 10, 255
GROUND_CLASSES = (0, 1, 9)  # road (with its paint), sidewalk, terrain: the analytic ground plane
REQUIRED = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18)  # 16 train / 17 motorcycle optional


def same(a: SyntheticFrame, b: SyntheticFrame) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
            and np.array_equal(a.depth, b.depth))


def check_frame(f: SyntheticFrame, h: int, w: int) -> None:
    assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
    assert f.labels.shape == (h, w) and f.labels.dtype == np.uint8
    assert f.depth.shape == (h, w) and f.depth.dtype == np.float32
    assert set(np.unique(f.labels).tolist()) <= set(range(19)) | {IGNORE}
    assert np.isfinite(f.depth).all() and (f.depth >= 0).all()
    # depth is valid exactly where something is labelled (not sky, not 'nothing')
    np.testing.assert_array_equal(f.depth > 0, (f.labels != SKY) & (f.labels != IGNORE))


def test_render_sample_is_deterministic_and_seeded():
    a, b = render_sample(3, 64, 128), render_sample(3, 64, 128)
    assert same(a, b)
    c = render_sample(4, 64, 128)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.labels, c.labels)
    check_frame(a, 64, 128)


@pytest.mark.parametrize("hw", [(97, 131), (375, 1242), (8, 8), (40, 33)])
def test_shapes_dtypes_and_consistency_at_odd_sizes(hw):
    h, w = hw
    check_frame(render_sample(11, h, w), h, w)
    check_frame(SyntheticWorld(11, h, w).render(5), h, w)


def test_bad_arguments():
    with pytest.raises(ValueError):
        SyntheticWorld(0, 4, 64)
    with pytest.raises(ValueError):
        SyntheticWorld(0, 64, 64, fps=0)


def test_random_access_equals_sequential():
    seq = SyntheticWorld(5, 64, 128)
    frames = [seq.render(i) for i in range(5)]
    other = SyntheticWorld(5, 64, 128)
    for i in (4, 1, 3, 0, 2, 4):
        assert same(other.render(i), frames[i]), i
    assert same(seq.render(2), frames[2])  # re-rendering from the world's cache changes nothing
    assert not same(frames[0], frames[4])


def test_camera_drives_forward_smoothly():
    world = SyntheticWorld(9, 64, 128, fps=10.0)
    cams = [world.camera(i) for i in range(0, 200, 10)]
    z = np.array([c.z for c in cams])
    dz = np.diff(z)
    assert (dz > 0).all() and np.allclose(dz, dz[0])  # steady speed
    assert 2.0 < dz[0] < 20.0  # 10 frames at 10 fps: one second of driving
    for c in cams:
        assert abs(c.yaw) < math.radians(4) and abs(c.pitch) < math.radians(6)
        assert 1.0 < c.height < 2.0 and c.focal > 0
    a, b = world.camera(50), world.camera(51)
    assert abs(a.yaw - b.yaw) < math.radians(0.2) and abs(a.pitch - b.pitch) < math.radians(0.2)


def expected_ground_depth(cam: Camera, rows: np.ndarray) -> np.ndarray:
    """Independent flat-ground model: a pinhole at height h pitched down by theta (zero roll) sees the
    ground at row v at z-depth h f / (cos(theta) (v - v_horizon)), v_horizon = cy - f tan(theta)."""
    v_h = cam.cy - cam.focal * math.tan(cam.pitch)
    return cam.height * cam.focal / (math.cos(cam.pitch) * (rows - v_h))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ground_depth_matches_camera_model(seed):
    world = SyntheticWorld(seed, 120, 240)
    for index in (0, 37):
        cam = world.camera(index)
        f = world.render(index)
        rows, _ = np.nonzero(np.isin(f.labels, GROUND_CLASSES))
        assert len(rows) > 1000
        got = f.depth[np.isin(f.labels, GROUND_CLASSES)]
        np.testing.assert_allclose(got, expected_ground_depth(cam, rows.astype(np.float64)), rtol=2e-4)


def test_render_sample_ground_matches_its_camera():
    world, index = sample_drive(77, 96, 192)
    cam = world.camera(index)
    f = render_sample(77, 96, 192)
    mask = np.isin(f.labels, GROUND_CLASSES)
    rows, _ = np.nonzero(mask)
    np.testing.assert_allclose(f.depth[mask], expected_ground_depth(cam, rows.astype(np.float64)), rtol=2e-4)


@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_objects_occlude_the_road_behind_them(seed):
    """Every object pixel below the horizon is nearer than the ground that its pixel would otherwise show
    (things stand on the ground, and the z-buffer let nothing behind the ground through)."""
    world, index = sample_drive(seed, 128, 256)
    cam = world.camera(index)
    f = world.render(index)
    v = np.arange(f.depth.shape[0], dtype=np.float64)
    below = v > cam.v_horizon + 1.0
    ground_z = np.full_like(v, np.inf)
    ground_z[below] = expected_ground_depth(cam, v[below])
    obj = ~np.isin(f.labels, GROUND_CLASSES + (SKY, IGNORE))
    rows, cols = np.nonzero(obj & below[:, None])
    assert len(rows) > 100
    assert (f.depth[rows, cols] <= ground_z[rows] * (1 + 1e-4)).all()
    # cars hide the road behind them: clearly nearer than the ground their pixels would show
    r, c = np.nonzero((f.labels == 13) & below[:, None])
    assert len(r) > 50
    ratio = f.depth[r, c] / ground_z[r]
    assert (ratio <= 1 + 1e-4).all() and np.median(ratio) < 0.9


def _wall(fb: FaceBuilder, x0: float, x1: float, y0: float, y1: float, z: float, cls: int) -> None:
    """A fronto-parallel rectangle facing the camera at distance z."""
    fb.add((0.0, 0.0, z), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0),
           [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)]], cls, 3, (0.5, 0.5, 0.5))


@pytest.mark.parametrize("near_first", [False, True])
def test_zbuffer_nearer_face_wins_whatever_the_order(near_first):
    cam = Camera(x=0.0, z=0.0, height=1.5, yaw=0.0, pitch=0.0, focal=100.0, cx=99.5, cy=49.5,
                 image_height=100, image_width=200)
    fb = FaceBuilder()
    faces = [(-10, 10, 0, 8, 30.0, 2), (-1, 1, 0, 3, 10.0, 13), (3.0, 3.2, 1.4, 1.6, 12.0, 7)]  # tiny last
    for x0, x1, y0, y1, z, cls in (faces[1:2] + faces[:1] + faces[2:] if near_first else faces):
        _wall(fb, x0, x1, y0, y1, z, cls)
    built = fb.build()
    r = rasterize(built, cam, far=200.0)
    cls = np.concatenate([[SKY, 0], built.cls])[r.ids]
    depth = np.where(r.ids > 0, 1.0 / np.maximum(r.w, 1e-12), 0.0)
    # image centre column/row of the horizon: the near wall (x in [-1, 1], 10 m) hides the far one
    assert cls[45, 100] == 13 and depth[45, 100] == pytest.approx(10.0, rel=1e-5)
    # beside it the far wall at 30 m (x = 30 * (130 - 99.5) / 100 = 9.15 m, inside its 10 m half width)
    assert cls[45, 130] == 2 and depth[45, 130] == pytest.approx(30.0, rel=1e-5)
    assert cls[45, 160] == SKY and depth[45, 160] == 0.0  # beyond its edge: sky
    # the tiny sign (2 x 2 px) in front of the far wall, at 12 m
    u, v = 99.5 + 100 * 3.1 / 12.0, 49.5 - 100 * (1.5 - 1.5) / 12.0
    assert cls[int(round(v)), int(round(u))] == 7
    assert depth[int(round(v)), int(round(u))] == pytest.approx(12.0, rel=1e-5)
    # below the walls, ground at its analytic depth h f / (v - cy)
    assert r.ids[90, 10] == GROUND_ID
    assert depth[90, 10] == pytest.approx(1.5 * 100.0 / (90 - 49.5), rel=1e-5)


def test_slanted_face_depth_is_exact():
    """A face seen at an angle: depth at any covered pixel equals the ray-plane intersection."""
    cam = Camera(x=0.3, z=-2.0, height=1.4, yaw=0.05, pitch=0.03, focal=120.0, cx=80.0, cy=45.0,
                 image_height=90, image_width=160)
    fb = FaceBuilder()
    n = np.array([-1.0, 0.0, -0.3]) / math.hypot(1.0, 0.3)  # a building side turned towards the camera
    O = np.array([4.0, 0.0, 10.0])
    U = np.array([-0.3, 0.0, 1.0]) / math.hypot(1.0, 0.3)
    fb.add(tuple(O), tuple(U), (0.0, 1.0, 0.0), tuple(n), [[(0, 0), (25, 0), (25, 9), (0, 9)]], 2, 3,
           (0.5, 0.5, 0.5), flags=TWO_SIDED)
    r = rasterize(fb.build(), cam, far=100.0)
    vs, us = np.nonzero(r.ids == FIRST_FACE_ID)
    assert len(vs) > 200
    R = cam.rotation()
    rays = (np.stack([(us - cam.cx) / cam.focal, (vs - cam.cy) / cam.focal, np.ones(len(us))], 1)) @ R
    t = (n @ (O - cam.position)) / (rays @ n)  # ray parameter = z-depth, rays have unit forward component
    P = cam.position + t[:, None] * rays
    fs, ft = (P - O) @ U, P[:, 1]
    inside = (fs > 0) & (fs < 25) & (ft > 0) & (ft < 9)  # pixel centre on the face, not just its edge
    assert inside.mean() > 0.9
    depth = 1.0 / r.w[vs, us]
    np.testing.assert_allclose(depth[inside], t[inside], rtol=1e-4)
    # rasterised edge pixels stay within the depth range of the face's corners
    corners = O + np.array([[0, 0], [25, 0], [25, 9], [0, 9]]) @ np.stack([U, [0.0, 1.0, 0.0]])
    zc = cam.project(corners)[:, 2]
    assert zc.min() * (1 - 1e-5) <= depth.min() and depth.max() <= zc.max() * (1 + 1e-5)


def test_every_class_appears_over_thirty_samples():
    counts = np.zeros(256, np.int64)
    per_frame = []
    for s in range(30):
        f = render_sample(1000 + s, 96, 192)
        c = np.bincount(f.labels.ravel(), minlength=256)
        counts += c
        per_frame.append(int((c[:19] > 0).sum()))
    missing = [k for k in REQUIRED if counts[k] == 0]
    assert not missing, f"classes never drawn: {missing}"
    assert np.median(per_frame) >= 12  # most frames show most classes
    assert counts[16] == 0 and counts[17] == 0


def test_video_is_smooth_and_moves():
    world = SyntheticWorld(8, 96, 192)
    a, b, far = world.render(40), world.render(41), world.render(240)
    img = lambda f: f.image.astype(np.int16)  # noqa: E731
    near_diff = np.abs(img(a) - img(b)).mean()
    far_diff = np.abs(img(a) - img(far)).mean()
    assert near_diff < 12.0
    assert far_diff > 2 * near_diff and far_diff > 12.0
    assert (a.labels != b.labels).mean() < 0.2
