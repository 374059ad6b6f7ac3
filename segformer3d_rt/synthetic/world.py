"""Procedural driving world with exact Cityscapes labels and metric depth.

A camera drives along a straight street (lanes and markings, sidewalks, buildings, walls, fences, poles,
traffic lights and signs, vegetation, terrain, parked and moving cars/trucks/buses, pedestrians, riders and
bicycles) under a per-drive style (layout, architecture, colours, lighting, weather, camera height/pitch/FOV).
The ground is analytic per pixel; everything else is planar faces rasterised with a z-buffer, so depth is
exact for what is drawn and labels agree with depth pixel for pixel. Haze, lighting, noise and blur touch the
image only. Everything is a function of (seed, frame index): any frame can be rendered in any order.

    world = SyntheticWorld(seed=3, height=256, width=512)
    frame = world.render(0)          # SyntheticFrame(image, labels, depth)
    cam = world.camera(0)            # Camera: height (m), pitch/yaw (rad), focal, cx, cy (px), x, z (m)
    sample = render_sample(12345)    # an independent training sample

Camera: pinhole, zero roll, pitch > 0 looks down; ground at z-depth h f / (cos(pitch) (v - v_horizon)) on
image row v, v_horizon = cy - f tan(pitch); pixel centres at integer coordinates. Classes drawn: the
Cityscapes train ids except train (16) and motorcycle (17); 255 only for the ego car's bonnet that some
drives show (depth 0 there and on the sky). Depth stays mostly under ~100 m: a skyline 60-120 m ahead
closes the street.

`python -m segformer3d_rt.synthetic --bench` measures single-thread speed; `--save DIR` writes PNGs.
Speed note: the renderer allocates a few MB of temporaries per frame; glibc returns them to the OS between
frames, and page faults are slow on some VMs. MALLOC_TRIM_THRESHOLD_=134217728 MALLOC_MMAP_THRESHOLD_=33554432
in the environment of a training process avoids that (measured 10-20% faster here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from . import scene as sc
from .. import labels
from ..labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE
from .raster import Camera, FaceBuilder, Faces, rasterize
from .shade import TEXTURES, shade

__all__ = ["SyntheticFrame", "SyntheticWorld", "Camera", "render_sample", "sample_drive", "CLASS_NAMES",
           "IGNORE", "SKY"]

CLASS_NAMES = CITYSCAPES_CLASSES  # the world is labelled in Cityscapes train ids
SKY = CITYSCAPES_CLASSES.index(labels.SKY)
_BEHIND = 30.0  # metres of road behind the camera still generated (long buildings reach into view)
_CACHE_MAX = 256  # segments kept per world; a video only ever needs the few dozen around the camera


@dataclass
class SyntheticFrame:
    image: np.ndarray  # H x W x 3 uint8 RGB
    labels: np.ndarray  # H x W uint8, Cityscapes train ids, 255 = nothing
    depth: np.ndarray  # H x W float32 metres (z-depth along the optical axis); 0.0 = invalid (sky)


class SyntheticWorld:
    """One drive: seed -> street, style and traffic; frame index -> camera pose and moving objects."""

    def __init__(self, seed: int, height: int = 256, width: int = 512, fps: float = 25.0) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"image size {height}x{width} too small (at least 8x8)")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.seed = int(seed)
        self.height = int(height)
        self.width = int(width)
        self.fps = float(fps)
        self.style = sc.make_style(self.seed)
        self._backdrop = sc.backdrop(self.style)
        self._cache: dict[tuple, tuple[Faces, float]] = {}
        self._one_shot = False  # render_sample: one frame per world, nothing worth caching
        # the camera's lateral range over the drive: faces turned away from all of it are never generated
        self._cam_x = (self.style.ego_x - 0.4, self.style.ego_x + 0.4)

    def camera(self, index: int) -> Camera:
        """Camera of frame `index`: forward at the drive's speed, smooth small yaw/pitch/lateral wander."""
        st = self.style
        t = index / self.fps
        ya, yb, pa = st.jitter[:3]
        ph = st.jitter[3:]
        tau = 2 * math.pi
        yaw = yb + ya * (math.sin(tau * 0.07 * t + ph[0]) + 0.6 * math.sin(tau * 0.23 * t + ph[1]))
        pitch = st.pitch0 + pa * (math.sin(tau * 0.11 * t + ph[2]) + 0.3 * math.sin(tau * 1.1 * t + ph[3]))
        x = st.ego_x + 0.25 * math.sin(tau * 0.05 * t + ph[4])
        f = (self.width / 2) / math.tan(st.hfov / 2)
        return Camera(x=x, z=st.speed * t, height=st.cam_h, yaw=yaw, pitch=pitch, focal=f,
                      cx=(self.width - 1) / 2 + st.pp[0] * self.width,
                      cy=(self.height - 1) / 2 + st.pp[1] * self.height,
                      image_height=self.height, image_width=self.width)

    def _generate(self, key: tuple, fb: FaceBuilder) -> float:
        kind, a, b, k = key
        st = self.style
        if kind == "block":
            return sc.block(st, k, fb)
        if kind == "lane":
            sc.lane_segment(st, a, k, fb)
        elif kind == "walk":
            sc.walk_segment(st, a, b, k, fb)
        else:
            sc.ride_segment(st, a, k, fb)
        return math.nan

    def _segment(self, key: tuple) -> tuple[Faces, float]:
        hit = self._cache.get(key)
        if hit is None:
            fb = FaceBuilder(self._cam_x)
            cz = self._generate(key, fb)
            hit = (fb.build(), cz)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _faces(self, cam: Camera, t: float) -> tuple[Faces, int, np.ndarray]:
        """All faces near the camera at time t, the first road segment and its zebra-crossing table."""
        st = self.style
        lo, hi = cam.z - _BEHIND, cam.z + st.backdrop + 5.0
        k0, k1 = math.floor(lo / sc.SEG), math.floor(hi / sc.SEG)
        keys = [(("block", 0, 0, k), 0.0) for k in range(k0, k1 + 1)]
        moving = [(("lane", j, 0), ln.v) for j, ln in enumerate(st.lanes)]
        moving += [(("walk", side, d), st.walk_v[i * 2 + (d < 0)]) for i, side in enumerate((1, -1)) for d in (1, -1)]
        moving += [(("ride", side, 0), st.ride_v[i]) for i, side in enumerate((1, -1))]
        for key, v in moving:
            dz = v * t
            k0m, k1m = math.floor((lo - dz) / sc.SEG_MOVING), math.floor((hi - dz) / sc.SEG_MOVING)
            keys += [(key + (k,), dz) for k in range(k0m, k1m + 1)]
        cross = np.full(k1 - k0 + 1, np.nan)
        parts = [self._backdrop.shifted(cam.z)]
        if self._one_shot:  # a single frame: no cache, one builder, objects out of view never built
            tn = max(cam.cx + 0.5, cam.image_width - 0.5 - cam.cx) / cam.focal
            tn = math.tan(math.atan(tn) + abs(cam.yaw) + 0.03)
            fb = FaceBuilder(self._cam_x, (cam.x, cam.z, tn, st.backdrop + 5.0))
            for key, dz in keys:
                fb.dz = dz
                cz = self._generate(key, fb)
                if key[0] == "block":
                    cross[key[3] - k0] = cz
            parts.append(fb.build())
        else:
            for key, dz in keys:
                faces, cz = self._segment(key)
                parts.append(faces.shifted(dz))
                if key[0] == "block":
                    cross[key[3] - k0] = cz
        return Faces.concat(parts), k0, cross

    def render(self, index: int) -> SyntheticFrame:
        """Frame `index` of this seed's drive: the camera moves forward along the road at a steady speed
        with small yaw/pitch jitter; random access (any index, any order) gives identical results;
        consecutive frames form a smooth video."""
        index = int(index)
        cam = self.camera(index)
        t = index / self.fps
        faces, k0, cross = self._faces(cam, t)
        st = self.style
        ground = replace(st.ground, cross_k0=k0, cross_z=cross)
        raster = rasterize(faces, cam, far=st.backdrop + 10.0)
        rng = sc.seg_rng(self.seed, 3, index)
        image, labels, depth = shade(raster, faces, cam, st.look, ground, TEXTURES, rng)
        if st.hood is not None:
            _draw_hood(image, labels, depth, st.hood, st.look.sun_rgb)
        return SyntheticFrame(image=image, labels=labels, depth=depth)


def _draw_hood(image: np.ndarray, labels: np.ndarray, depth: np.ndarray, poly: np.ndarray,
               light: np.ndarray) -> None:
    """The ego car's bonnet at the bottom of the frame: 'nothing' (255) with invalid depth, as in Cityscapes."""
    H, W = labels.shape
    pts = np.rint(poly * [W - 1, H - 1] * 16).astype(np.int32)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
    m = mask.view(bool)
    labels[m] = IGNORE
    depth[m] = 0.0
    rows = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
    paint = (np.array([40, 42, 48], np.float32) + 60 * rows * (0.5 + float(np.mean(light))))
    image[m] = np.broadcast_to(np.clip(paint, 0, 255), (H, W, 3))[m].astype(np.uint8)


def sample_drive(seed: int, height: int = 256, width: int = 512) -> tuple[SyntheticWorld, int]:
    """The drive and frame index that `render_sample(seed, ...)` renders (exposes its camera for checks).
    The world is set up for single frames: nothing is cached and objects out of that frame's view are
    never built (so its frames are not those of a fresh SyntheticWorld of the same seed)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x5A4D])
    world_seed = int(rng.integers(0, 1 << 62))
    index = int(rng.integers(0, 250_000))
    world = SyntheticWorld(world_seed, height, width)
    world._one_shot = True
    return world, index


def render_sample(seed: int, height: int = 256, width: int = 512) -> SyntheticFrame:
    """One independent training sample: a random drive (its own layout, style, weather, camera height and
    pitch) seen at a random position. Same seed -> identical arrays."""
    world, index = sample_drive(seed, height, width)
    return world.render(index)


# ---------------------------------------------------------------- command line: benchmark and previews

PALETTE = np.array(CITYSCAPES_PALETTE, np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Cityscapes colours (RGB) of a train-id map; 255 is black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(PALETTE)] = PALETTE
    return lut[labels]


def _depth_png(depth: np.ndarray) -> np.ndarray:
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-3), 0.0)
    v = np.clip(inv / 0.5, 0, 1) ** 0.5  # near = bright
    return cv2.applyColorMap((v * 255).astype(np.uint8), cv2.COLORMAP_PLASMA)[:, :, ::-1]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os
    import time

    ap = argparse.ArgumentParser(prog="python -m segformer3d_rt.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--bench", action="store_true", help="frames/s of render_sample, one thread")
    ap.add_argument("--save", metavar="DIR", help="write image / labels / depth PNGs of a few samples")
    ap.add_argument("--size", default="256x512", help="HxW (default 256x512)")
    ap.add_argument("-n", type=int, default=40, help="samples to render (bench) or save")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--video", action="store_true", help="--save consecutive frames of one drive instead")
    a = ap.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    cv2.setNumThreads(1)
    try:  # numpy's BLAS is barely used here (tiny matrices), but keep the measurement single threaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if a.bench:
        # median and best of 3 rounds: on a shared machine single runs vary by tens of percent. CPU time
        # over wall time shows that the work ran on one core (a ratio near 1.0).
        render_sample(a.seed, h, w)  # warm-up
        for name, make in (("render_sample", None), ("SyntheticWorld.render (sequential video)", a.seed)):
            world = SyntheticWorld(make, h, w) if make is not None else None
            rates, ratio = [], []
            for r in range(3):
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(a.n):
                    if world is None:
                        render_sample(a.seed + 1 + r * a.n + i, h, w)
                    else:
                        world.render(r * a.n + i)
                wall = time.perf_counter() - t0
                rates.append(a.n / wall)
                ratio.append((time.process_time() - c0) / wall)
            rates.sort()
            print(f"{name} {h}x{w}: {rates[1]:.1f} frames/s median, {rates[2]:.1f} best "
                  f"({1000 / rates[1]:.1f} ms/frame; cpu/wall {max(ratio):.2f})")
    if a.save:
        os.makedirs(a.save, exist_ok=True)
        world = SyntheticWorld(a.seed, h, w) if a.video else None
        for i in range(a.n):
            f = world.render(i) if world is not None else render_sample(a.seed + i, h, w)
            base = os.path.join(a.save, f"{a.seed + i:06d}")
            cv2.imwrite(base + "_image.png", f.image[:, :, ::-1])
            cv2.imwrite(base + "_labels.png", colorize(f.labels)[:, :, ::-1])
            cv2.imwrite(base + "_depth.png", _depth_png(f.depth)[:, :, ::-1])
            both = np.concatenate([f.image, colorize(f.labels), _depth_png(f.depth)], axis=0)
            cv2.imwrite(base + "_all.png", both[:, :, ::-1])
        print(f"wrote {a.n} samples to {a.save}")
    if not (a.bench or a.save):
        ap.print_help()
    return 0

