"""Object builders of the synthetic world: each appends planar faces (with class, material, colours)
to a FaceBuilder. Shapes are chosen for learnable silhouettes at 128x256..256x512, not CAD accuracy."""
from __future__ import annotations

import math

import numpy as np

from .raster import BILLBOARD, TWO_SIDED, FaceBuilder
from .shade import (BUS_SIDE, CAR_END, CAR_SIDE, FACADE, FENCE, FOLIAGE, GLASS, LIGHT, PANEL, PERSON, PLAIN, SIGN,
                    WALL, WHEEL)

# Cityscapes train ids
BUILDING, WALL_ID, FENCE_ID, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION = 2, 3, 4, 5, 6, 7, 8
PERSON_ID, RIDER, CAR, TRUCK, BUS, BICYCLE = 11, 12, 13, 14, 15, 18

Y = (0.0, 1.0, 0.0)
EX = (1.0, 0.0, 0.0)  # initial axes of billboards (turned to the camera when drawn)
NZ = (0.0, 0.0, -1.0)
PZ = (0.0, 0.0, 1.0)

# palettes (RGB 0..1); every pick is jittered, so each class keeps a plausible but wide colour range
BUILDING_COLS = (
    (0.85, 0.80, 0.68), (0.88, 0.87, 0.84), (0.72, 0.72, 0.70), (0.80, 0.66, 0.42),
    (0.80, 0.56, 0.46), (0.90, 0.83, 0.58), (0.60, 0.65, 0.72), (0.56, 0.30, 0.22),
    (0.42, 0.22, 0.17), (0.55, 0.55, 0.52), (0.76, 0.66, 0.52), (0.40, 0.40, 0.42),
    (0.66, 0.70, 0.62), (0.78, 0.74, 0.78),
)
WALL_COLS = (
    (0.62, 0.62, 0.60), (0.50, 0.50, 0.48), (0.70, 0.66, 0.58), (0.55, 0.32, 0.25),
    (0.45, 0.45, 0.47), (0.75, 0.72, 0.65), (0.60, 0.56, 0.50),
)
CAR_COLS = (
    (0.88, 0.88, 0.88), (0.08, 0.08, 0.09), (0.65, 0.66, 0.68), (0.38, 0.39, 0.41),
    (0.10, 0.15, 0.35), (0.20, 0.35, 0.65), (0.60, 0.08, 0.08), (0.35, 0.05, 0.07),
    (0.15, 0.30, 0.20), (0.70, 0.62, 0.50), (0.85, 0.70, 0.10), (0.80, 0.40, 0.10),
)
CAR_P = (16, 14, 14, 12, 6, 6, 6, 4, 3, 3, 2, 2)
TRUCK_COLS = (
    (0.92, 0.92, 0.92), (0.75, 0.10, 0.10), (0.15, 0.30, 0.65), (0.90, 0.75, 0.10),
    (0.60, 0.62, 0.65), (0.20, 0.45, 0.25), (0.30, 0.30, 0.32),
)
BUS_COLS = (
    (0.92, 0.78, 0.10), (0.90, 0.90, 0.90), (0.78, 0.12, 0.10), (0.15, 0.32, 0.62),
    (0.20, 0.52, 0.30), (0.88, 0.85, 0.72), (0.95, 0.55, 0.10),
)
CLOTH_COLS = (
    (0.08, 0.08, 0.10), (0.15, 0.17, 0.25), (0.35, 0.35, 0.37), (0.85, 0.85, 0.82),
    (0.60, 0.52, 0.40), (0.70, 0.12, 0.12), (0.18, 0.30, 0.60), (0.20, 0.35, 0.22),
    (0.40, 0.25, 0.15), (0.25, 0.32, 0.50), (0.80, 0.60, 0.20), (0.55, 0.20, 0.45),
)
SKIN_COLS = (
    (0.87, 0.70, 0.57), (0.72, 0.52, 0.40), (0.47, 0.32, 0.23), (0.95, 0.80, 0.68),
)
BIKE_COLS = (
    (0.08, 0.08, 0.08), (0.70, 0.10, 0.10), (0.15, 0.25, 0.60), (0.70, 0.70, 0.72),
    (0.15, 0.45, 0.25), (0.90, 0.90, 0.88), (0.85, 0.60, 0.10),
)
POLE_COLS = (
    (0.55, 0.56, 0.57), (0.22, 0.22, 0.24), (0.22, 0.32, 0.26), (0.70, 0.70, 0.72),
    (0.45, 0.45, 0.42),
)
ROOF_COLS = (
    (0.45, 0.18, 0.12), (0.30, 0.28, 0.28), (0.50, 0.30, 0.20), (0.22, 0.22, 0.25),
)
GLASS_RGB = (0.07, 0.09, 0.11)
TROUSER_COLS = tuple(CLOTH_COLS[i] for i in (0, 1, 2, 9, 9, 4, 8))
TRUCK_BOX_COLS = tuple(TRUCK_COLS[i] for i in (0, 0, 4, 1, 2, 3))
BARK_COLS = ((0.30, 0.23, 0.16), (0.38, 0.34, 0.28), (0.22, 0.18, 0.14))
HOUSING_COLS = ((0.08, 0.08, 0.08), (0.25, 0.25, 0.25), (0.75, 0.6, 0.1))
PANEL_COLS = ((0.92, 0.92, 0.9), (0.1, 0.3, 0.7), (0.1, 0.45, 0.25), (0.95, 0.8, 0.1))
DARK = (0.05, 0.05, 0.05)


class Rand:
    """Fast scalar draws for scene generation: numbers come from a Generator in blocks (deterministic)."""

    __slots__ = ("gen", "_buf", "_i")

    def __init__(self, gen: np.random.Generator) -> None:
        self.gen = gen
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        i = self._i
        if i >= len(self._buf):  # small first block: many segments need only a few numbers
            self._buf = self.gen.random(64 if not self._buf else 512).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def u(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def int(self, a: int, b: int | None = None) -> int:
        """Integer in [a, b) (or [0, a))."""
        if b is None:
            a, b = 0, a
        return a + min(int(self.random() * (b - a)), b - a - 1)

    def sign(self) -> float:
        return 1.0 if self.random() < 0.5 else -1.0

    def choice(self, p) -> int:
        """Index drawn with (unnormalised) weights p."""
        r = self.random() * sum(p)
        for i, w in enumerate(p):
            r -= w
            if r < 0:
                return i
        return len(p) - 1

    def exp(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.random())

    def poisson(self, lam: float) -> int:
        L, k, p = math.exp(-lam), 0, self.random()
        while p > L:
            k += 1
            p *= self.random()
        return k


def pick(rng: Rand, cols: np.ndarray, jitter: float = 0.05, p=None, bright: tuple[float, float] = (0.88, 1.12)) -> tuple:
    c = cols[rng.int(len(cols)) if p is None else rng.choice(p)]
    b = rng.u(*bright)
    return (min(max(c[0] * b + rng.u(-jitter, jitter), 0.02), 1.0), min(max(c[1] * b + rng.u(-jitter, jitter), 0.02), 1.0),
            min(max(c[2] * b + rng.u(-jitter, jitter), 0.02), 1.0))


def frame(yaw: float) -> tuple[tuple, tuple]:
    """Forward and right unit vectors of a heading (yaw > 0 turns right, 0 = along +z)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return (s, 0.0, c), (c, 0.0, -s)


def lin(*terms) -> tuple:
    """sum of k * v over (k, v) pairs of a scalar and a 3-vector."""
    x = y = z = 0.0
    for k, v in terms:
        x += k * v[0]
        y += k * v[1]
        z += k * v[2]
    return (x, y, z)


def neg(v) -> tuple:
    return (-v[0], -v[1], -v[2])


def rect(s0: float, s1: float, t0: float, t1: float) -> list:
    return [(s0, t0), (s1, t0), (s1, t1), (s0, t1)]


_CIRCLES = {n: [(math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i in range(n)]
            for n in (8, 10, 12, 14, 16)}


def ellipse(cs: float, ct: float, rs: float, rt: float, n: int = 12) -> list:
    return [(cs + rs * c, ct + rt * s) for c, s in _CIRCLES[n]]


def sticks(p0: np.ndarray, p1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Thick segments (limbs, tubes) as quads: (k, 2) ends and (k,) widths -> (4 k, 2) vertices."""
    d = p1 - p0
    n = np.stack([-d[:, 1], d[:, 0]], axis=1) * (w / 2 / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6))[:, None]
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n], axis=1).reshape(-1, 2)


def blob(rng: Rand, cs: float, ct: float, rs: float, rt: float, n: int = 16, rough: float = 0.15) -> list:
    r = [2.0 * rng.random() - 1.0 for _ in range(n)]
    out = []
    for i, (c, s) in enumerate(_CIRCLES[n]):
        k = 1.0 + rough * (r[i] + 0.5 * r[i - 1])
        out.append((cs + rs * k * c, ct + rt * k * s))
    return out


def box(fb: FaceBuilder, x: float, z: float, yaw: float, hw: float, hl: float, y0: float, y1: float, cls: int,
        look: dict, seed: float, sides: str = "rlbft") -> None:
    """Box on local axes (right, up, forward); look maps face name (r, l, b, f, t, or '*') to
    (material, col, col2, par). Face coordinates run along the face from one corner, in metres."""
    fwd, rt = frame(yaw)
    c = (x, 0.0, z)
    h = y1 - y0
    for name in sides:
        mat, col, col2, par = look.get(name, look["*"])
        if name == "r":
            O, U, V, N, cont = lin((1, c), (hw, rt), (-hl, fwd), (y0, Y)), fwd, Y, rt, rect(0, 2 * hl, 0, h)
        elif name == "l":
            O, U, V, N, cont = lin((1, c), (-hw, rt), (hl, fwd), (y0, Y)), neg(fwd), Y, neg(rt), rect(0, 2 * hl, 0, h)
        elif name == "b":
            O, U, V, N, cont = lin((1, c), (-hl, fwd), (-hw, rt), (y0, Y)), rt, Y, neg(fwd), rect(0, 2 * hw, 0, h)
        elif name == "f":
            O, U, V, N, cont = lin((1, c), (hl, fwd), (hw, rt), (y0, Y)), neg(rt), Y, fwd, rect(0, 2 * hw, 0, h)
        else:
            O, U, V, N, cont = lin((1, c), (-hl, fwd), (-hw, rt), (y1, Y)), rt, fwd, Y, rect(0, 2 * hw, 0, 2 * hl)
        fb.add(O, U, V, N, [cont], cls, mat, col, col2, par, seed)


def _extrude(fb: FaceBuilder, c: tuple, yaw: float, hw: float, prof: list[tuple[float, float]],
             caps: list, side_look: tuple, cls: int, seed: float) -> None:
    """A profile (l forward, y up; counter-clockwise) extruded across the width 2 hw. caps[i] is the
    look of edge i -> i+1 (None: never seen). Vertical caps get t measured upwards."""
    fwd, rt = frame(yaw)
    mat, col, col2, par = side_look
    for sgn in (1.0, -1.0):
        fb.add(lin((1, c), (sgn * hw, rt)), fwd, Y, lin((sgn, rt)), [prof], cls, mat, col, col2, par, seed)
    k = len(prof)
    for i in range(k):
        if caps[i] is None:
            continue
        (l0, y0), (l1, y1) = prof[i], prof[(i + 1) % k]
        dl, dy = l1 - l0, y1 - y0
        ln = math.hypot(dl, dy)
        if ln < 1e-3:
            continue
        N = lin((dy / ln, fwd), (-dl / ln, Y))
        if dy < 0:  # run vertical-ish caps upwards so materials can use t as height
            l0, y0, dl, dy = l1, y1, -dl, -dy
        mat, col, col2, par = caps[i]
        fb.add(lin((1, c), (l0, fwd), (y0, Y), (-hw, rt)), rt, lin((dl / ln, fwd), (dy / ln, Y)), N,
               [rect(0, 2 * hw, 0, ln)], cls, mat, col, col2, par, seed)


def _wheels(fb: FaceBuilder, c: tuple, yaw: float, hw: float, half_base: float, r: float, cls: int,
            rim: tuple, seed: float) -> None:
    fwd, rt = frame(yaw)
    cont = [ellipse(-half_base, r, r, r, 14), ellipse(half_base, r, r, r, 14)]
    for sgn in (1.0, -1.0):
        fb.add(lin((1, c), (sgn * (hw + 0.02), rt)), fwd, Y, lin((sgn, rt)), cont, cls, WHEEL, DARK, rim,
               (half_base, r, 0), seed)


def _glass(rng: Rand, lo: float, hi: float) -> tuple:
    k = rng.u(lo, hi)
    return (GLASS_RGB[0] * k, GLASS_RGB[1] * k, GLASS_RGB[2] * k)


def car(fb: FaceBuilder, rng: Rand, x: float, z: float, yaw: float) -> float:
    """A car or van; returns its length."""
    c = (x, 0.0, z)
    seed = rng.random()
    kind = rng.choice((0.62, 0.26, 0.12))  # saloon/hatch, SUV, van
    L = rng.u(3.8, 4.9) if kind < 2 else rng.u(4.6, 5.4)
    hw = rng.u(0.82, 0.95) if kind < 2 else rng.u(0.95, 1.02)
    yb = 0.28
    belt = rng.u(0.85, 1.0) if kind == 0 else rng.u(0.95, 1.1)
    roof = (rng.u(1.38, 1.52), rng.u(1.6, 1.8), rng.u(1.9, 2.1))[kind]
    hood = (rng.u(0.9, 1.3), rng.u(0.8, 1.0), rng.u(0.5, 0.7))[kind]
    wsr = (rng.u(0.6, 0.9), rng.u(0.45, 0.65), rng.u(0.4, 0.5))[kind]
    hatch = kind > 0 or rng.random() < 0.4
    trunk = rng.u(0.15, 0.3) if hatch else rng.u(0.5, 0.9)
    rwr = rng.u(0.15, 0.3) if hatch else rng.u(0.4, 0.7)
    if kind == 2:
        trunk, rwr = 0.05, 0.08
    col = pick(rng, CAR_COLS, 0.04, CAR_P)
    glass = _glass(rng, 0.8, 1.6)
    body = (PLAIN, col, col, (0.03, 2.0))
    ws_base, rw_base = L / 2 - hood, -L / 2 + trunk
    prof = [(-L / 2, yb), (L / 2, yb), (L / 2, belt - 0.12), (ws_base, belt), (ws_base - wsr, roof),
            (rw_base + rwr, roof), (rw_base, belt), (-L / 2, belt - 0.1)]
    caps = [None, (CAR_END, col, col, (1, 2 * hw, belt - 0.12 - yb)), body,
            (GLASS, glass, glass, (math.hypot(wsr, roof - belt),)), body,
            (GLASS, glass, glass, (math.hypot(rwr, roof - belt),)), body,
            (CAR_END, col, col, (0, 2 * hw, belt - 0.1 - yb))]
    bp = ((ws_base - wsr) + (rw_base + rwr)) / 2 if kind < 2 else ws_base - wsr - 0.6
    side = (CAR_SIDE, col, glass, (belt, roof, ws_base, wsr, rw_base, rwr, bp, yb))
    _extrude(fb, c, yaw, hw, prof, caps, side, CAR, seed)
    box(fb, x, z, yaw, hw - 0.12, L / 2 - 0.45, 0.0, yb, CAR, {"*": (PLAIN, DARK, DARK, ())}, seed, "bf")
    r = rng.u(0.29, 0.34) if kind < 2 else 0.35
    g = rng.u(0.35, 0.75)
    _wheels(fb, c, yaw, hw, L * 0.31, r, CAR, (g, g, g), seed)
    return L


def truck(fb: FaceBuilder, rng: Rand, x: float, z: float, yaw: float) -> float:
    """Cab plus cargo box; returns the length."""
    seed = rng.random()
    fwd, _ = frame(yaw)
    hw = rng.u(1.15, 1.25)
    Lc = rng.u(1.8, 2.3)
    Lb = rng.u(4.0, 7.5)
    Hc = rng.u(2.6, 3.1)
    Hb = rng.u(3.0, 3.8)
    L = Lc + Lb + 0.2
    cab_col = pick(rng, TRUCK_COLS, 0.04)
    box_col = pick(rng, TRUCK_BOX_COLS, 0.04)
    glass = _glass(rng, 0.8, 1.6)
    l0 = L / 2 - Lc
    prof = [(l0, 0.45), (L / 2, 0.45), (L / 2, 1.5), (L / 2 - 0.25, Hc), (l0, Hc)]
    body = (PLAIN, cab_col, cab_col, (0.03, 2.0))
    caps = [None, (CAR_END, cab_col, cab_col, (1, 2 * hw, 1.05)),
            (GLASS, glass, glass, (Hc - 1.5,)), body, body]
    side = (CAR_SIDE, cab_col, glass, (1.5, Hc, L / 2, 0.25, l0 + 0.5 * Lc, 0.0, 1e3, 0.45))
    c = (x, 0.0, z)
    _extrude(fb, c, yaw, hw, prof, caps, side, TRUCK, seed)
    bc = lin((1, c), (-L / 2 + Lb / 2, fwd))
    stripe = (1.4, 1.9) if rng.random() < 0.4 else (0.0, 0.0)
    pan = (PANEL, box_col, pick(rng, TRUCK_COLS, 0.04), (rng.u(0.3, 0.6),) + stripe)
    box(fb, bc[0], bc[2], yaw, hw + 0.03, Lb / 2, 1.0, 1.0 + Hb, TRUCK, {"*": pan, "t": pan}, seed)
    box(fb, x, z, yaw, hw - 0.3, L / 2 - 0.3, 0.0, 1.0, TRUCK, {"*": (PLAIN, DARK, DARK, ())}, seed, "bf")
    lf, lr = L / 2 - Lc / 2, -L / 2 + 1.2  # front and rear axle
    _wheels(fb, lin((1, c), ((lf + lr) / 2, fwd)), yaw, hw, (lf - lr) / 2, 0.5, TRUCK, (0.5, 0.5, 0.5), seed)
    return L


def bus(fb: FaceBuilder, rng: Rand, x: float, z: float, yaw: float) -> float:
    seed = rng.random()
    L = rng.u(10.0, 12.5)
    hw = 1.27
    H = rng.u(2.95, 3.25)
    yb = 0.3
    col = pick(rng, BUS_COLS, 0.03)
    glass = _glass(rng, 0.8, 1.5)
    prof = [(-L / 2, yb), (L / 2, yb), (L / 2, 1.0), (L / 2 - 0.08, H - 0.15), (L / 2 - 0.25, H),
            (-L / 2 + 0.2, H), (-L / 2, H - 0.2), (-L / 2, 1.5)]
    body = (PLAIN, col, col, (0.02, 2.0))
    caps = [None, (CAR_END, col, col, (1, 2 * hw, 1.0 - yb)), (GLASS, glass, glass, (H - 1.0,)), body, body,
            body, (GLASS, glass, glass, (H - 1.7,)), (CAR_END, col, col, (0, 2 * hw, 1.2))]
    wb, wt = rng.u(1.05, 1.25), H - rng.u(0.25, 0.4)
    stripe = (0.75, 0.95) if rng.random() < 0.5 else (0.0, 0.0)
    side = (BUS_SIDE, col, glass, (wb, wt, rng.u(1.2, 1.7)) + stripe + (L / 2 - 1.2, 1.1))
    c = (x, 0.0, z)
    _extrude(fb, c, yaw, hw, prof, caps, side, BUS, seed)
    box(fb, x, z, yaw, hw - 0.2, L / 2 - 0.6, 0.0, yb, BUS, {"*": (PLAIN, DARK, DARK, ())}, seed, "bf")
    _wheels(fb, c, yaw, hw, L * 0.3, 0.5, BUS, (0.55, 0.55, 0.55), seed)
    return L


def _person_par(rng: Rand, hip: float, neck: float, top: float, shoe: float) -> tuple:
    skin = SKIN_COLS[rng.int(len(SKIN_COLS))]
    k = rng.u(0.9, 1.05)
    return (hip, neck, top, shoe, skin[0] * k, skin[1] * k, skin[2] * k, rng.random() ** 3)


def _template(parts: list[list[tuple]]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Vertices given as (a, b, g, y): x = a + b * width_factor + g * stride, in units of the height."""
    return np.array([v for part in parts for v in part], float), tuple(len(p) for p in parts)


def _person_template() -> tuple[np.ndarray, tuple[int, ...]]:
    c = _CIRCLES[10]
    head = [(0.068 * x, 0.0, 0.0, 0.925 + 0.078 * y) for x, y in c]
    neck = [(-0.035, 0, 0, 0.79), (0.035, 0, 0, 0.79), (0.035, 0, 0, 0.87), (-0.035, 0, 0, 0.87)]
    torso = [(0, -0.125, 0, 0.81), (0, 0.125, 0, 0.81), (0, 0.105, 0, 0.5), (0, -0.105, 0, 0.5)]
    arm_r = [(-0.01, 0.125, 0, 0.81), (0.045, 0.125, 0, 0.79), (0.05, 0.125, 0.3, 0.46), (0.005, 0.125, 0.3, 0.46)]
    arm_l = [(-a, -b, -g, y) for a, b, g, y in arm_r][::-1]
    leg_l = [(0, -0.105, 0, 0.52), (-0.005, 0, 0, 0.52), (-0.02, 0, -1, 0.0), (-0.085, 0, -1, 0.0)]
    leg_r = [(-a, -b, -g, y) for a, b, g, y in leg_l][::-1]
    return _template([head, neck, torso, arm_r, arm_l, leg_l, leg_r])


_PERSON = _person_template()
_COAT = _template([[(0, -0.105, 0, 0.52), (0, 0.105, 0, 0.52), (0, 0.142, 0, 0.28), (0, -0.142, 0, 0.28)]])
_BAG = _template([[(0, 0.1375, 0, 0.4), (0, 0.2375, 0, 0.4), (0, 0.2375, 0, 0.56), (0, 0.1375, 0, 0.56)]])


def person(fb: FaceBuilder, rng: Rand, x: float, z: float) -> None:
    """Standing/walking pedestrian as a camera-facing silhouette."""
    H = rng.u(1.55, 1.95) if rng.random() > 0.08 else rng.u(1.05, 1.35)
    wf = rng.u(0.9, 1.25)
    g = rng.u(0.0, 0.05)  # stride
    parts = [_PERSON]
    hip = 0.5 * H
    if rng.random() < 0.25:  # coat or dress
        parts.append(_COAT)
        hip = 0.28 * H
    bag = rng.random() < 0.2
    if bag:
        parts.append(_BAG)
    T = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    xs = T[:, 0] + T[:, 1] * wf + T[:, 2] * g
    if bag and rng.random() < 0.5:
        xs[-4:] = -xs[-4:]
    verts = np.stack([xs, T[:, 3]], axis=1) * H
    lens = sum((p[1] for p in parts), ())
    top = pick(rng, CLOTH_COLS, 0.06)
    bottom = pick(rng, TROUSER_COLS, 0.05)
    fb.add((x, 0.0, z), EX, Y, NZ, (verts, lens), PERSON_ID, PERSON, top,
           bottom, _person_par(rng, hip, 0.865 * H, H, 0.03 * H), rng.random(), BILLBOARD | TWO_SIDED)


def bicycle(fb: FaceBuilder, rng: Rand, x: float, z: float, yaw: float, ridden: bool) -> None:
    """Bicycle (and its rider) in the vertical plane of its heading, seen from either side."""
    seed = rng.random()
    fwd, rt = frame(yaw)
    O = (x, 0.0, z)
    R = rng.u(0.32, 0.36)
    c = rng.u(0.5, 0.56)
    tw = rng.u(0.05, 0.07)
    rear, front = (-c, R), (c, R)
    bb = (-0.05, R - 0.03)
    seat = (-0.22, R + 0.56)
    head = (c - 0.14, R + 0.5)
    bar = (c - 0.1, R + 0.66)
    ends = np.array([(rear, bb), (rear, seat), (bb, seat), (bb, head), (seat, head), (head, front), (head, bar),
                     ((seat[0] - 0.13, seat[1] + 0.03), (seat[0] + 0.1, seat[1] + 0.03)),
                     ((bar[0] - 0.12, bar[1]), (bar[0] + 0.06, bar[1] + 0.04))])
    w = np.array([tw, tw, tw, tw * 1.3, tw, tw, tw, 0.06, tw])
    fcol = pick(rng, BIKE_COLS, 0.04)
    two = TWO_SIDED
    fb.add(O, fwd, Y, rt, (sticks(ends[:, 0], ends[:, 1], w), (4,) * len(w)), BICYCLE, PLAIN, fcol, fcol,
           (0.02, 2.0), seed, two)
    g = rng.u(0.35, 0.6)
    fb.add(O, fwd, Y, rt, [ellipse(-c, R, R, R, 16), ellipse(c, R, R, R, 16)], BICYCLE, WHEEL, DARK, (g, g, g),
           (c, R, 1), seed, two)
    if not ridden:
        return
    lean = rng.u(0.15, 0.35)
    hip = (-0.2, R + 0.66)
    sh = (hip[0] + lean, hip[1] + 0.55)
    hd = (sh[0] + 0.08, sh[1] + 0.2)
    knee = (0.1, R + 0.5)
    knee2 = (-0.02, R + 0.56)
    ends = np.array([(hip, sh), (sh, bar), (hip, knee), (knee, (0.02, R - 0.05)), (hip, knee2),
                     (knee2, (-0.14, R + 0.12))])
    limbs = sticks(ends[:, 0], ends[:, 1], np.array([0.3, 0.09, 0.15, 0.11, 0.15, 0.11]))
    verts = np.concatenate([limbs, np.array(ellipse(hd[0], hd[1], 0.11, 0.12, 10))])
    top = pick(rng, CLOTH_COLS, 0.06)
    bottom = pick(rng, TROUSER_COLS, 0.05)
    par = _person_par(rng, hip[1] + 0.06, sh[1] + 0.04, hd[1] + 0.12, -1.0)
    fb.add(lin((1, O), (0.08, rt)), fwd, Y, rt, (verts, (4,) * 6 + (10,)), RIDER, PERSON, top, bottom, par, seed,
           two)


def _brighter(c: tuple, k: float, add: tuple = (0.0, 0.0, 0.0)) -> tuple:
    return tuple(min(max(c[i] * k + add[i], 0.0), 1.0) for i in range(3))


def tree(fb: FaceBuilder, rng: Rand, x: float, z: float, veg: tuple, scale: float = 1.0) -> None:
    seed = rng.random()
    th = rng.u(1.8, 3.2) * scale
    cr = rng.u(1.4, 3.0) * scale
    sy = rng.u(1.0, 1.4)
    tw = rng.u(0.22, 0.4) * math.sqrt(scale)
    O = (x, 0.0, z)
    bark = pick(rng, BARK_COLS, 0.03)
    fl = BILLBOARD | TWO_SIDED
    fb.add(O, EX, Y, NZ, [rect(-tw / 2, tw / 2, 0, th + cr * 0.8)], VEGETATION, PLAIN, bark, bark, (0.15, 3.0), seed,
           fl)
    ct = th + cr * sy * 0.9
    if rng.random() < 0.15:  # conifer
        k = 7
        pts = []
        for i in range(k):
            wi = cr + (0.1 - cr) * i / k
            pts.append((-wi * (1 + 0.4 * (i % 2)), th + 3.2 * cr * i / k))
        pts.append((0.0, th + 3.2 * cr))
        pts += [(-p[0], p[1]) for p in reversed(pts[:-1])]
        cont = [pts]
        ct, crr = th + 1.5 * cr, 1.6 * cr
    else:
        cont = [blob(rng, 0, ct, cr, cr * sy)]
        for _ in range(rng.int(0, 3)):
            cont.append(blob(rng, rng.u(-0.7, 0.7) * cr, ct - rng.u(0, 0.5) * cr,
                             cr * rng.u(0.5, 0.8), cr * rng.u(0.5, 0.8), 12))
        crr = cr * sy
    hi = _brighter(veg, rng.u(1.2, 1.6), (0.05, 0.05, -0.02))
    fb.add(O, EX, Y, NZ, cont, VEGETATION, FOLIAGE, pick(rng, (veg,), 0.04, bright=(0.8, 1.15)), hi,
           (ct, crr, rng.u(0.8, 1.5)), seed, fl, 0.3)


def bush(fb: FaceBuilder, rng: Rand, x: float, z: float, veg: tuple) -> None:
    r = rng.u(0.5, 1.3)
    fb.add((x, 0.0, z), EX, Y, NZ, [blob(rng, 0, r * 0.75, r * rng.u(1.0, 1.6), r, 14, 0.2)], VEGETATION, FOLIAGE,
           pick(rng, (veg,), 0.04), _brighter(veg, 1.4), (r * 0.75, r, 1.5), rng.random(), BILLBOARD | TWO_SIDED,
           0.2)


def hedge(fb: FaceBuilder, rng: Rand, x: float, z0: float, z1: float, hw: float, h: float, veg: tuple) -> None:
    look = {"*": (FOLIAGE, pick(rng, (veg,), 0.04), _brighter(veg, 1.4), (h * 0.6, h, 1.6))}
    box(fb, x, (z0 + z1) / 2, 0.0, hw, (z1 - z0) / 2, 0.0, h, VEGETATION, look, rng.random())


def pole(fb: FaceBuilder, x: float, z: float, h: float, w: float, col: tuple, seed: float) -> None:
    fb.add((x, 0.0, z), EX, Y, NZ, [rect(-w / 2, w / 2, 0, h)], POLE, PLAIN, col, col, (0.06, 3.0, 0.25, h), seed,
           BILLBOARD | TWO_SIDED)


def lamp(fb: FaceBuilder, rng: Rand, x: float, z: float, side: int, h: float, w: float, col: tuple,
         kind: int) -> None:
    """Street lamp: pole plus an arm over the road (kind 0), a top lantern (1) or a double arm (2)."""
    seed = rng.random()
    pole(fb, x, z, h, w, col, seed)
    O = (x, h, z - 0.05)
    toward = (-float(side), 0.0, 0.0)
    if kind == 1:
        fb.add(O, toward, Y, NZ, [rect(-0.25, 0.25, -0.1, 0.55), rect(-0.15, 0.15, 0.55, 0.7)], POLE, PLAIN, col,
               col, (0.05, 3.0), seed, TWO_SIDED)
        return
    arm = rng.u(1.0, 2.4)
    cont = [rect(0, arm, -0.12, 0.0), rect(arm - 0.65, arm + 0.05, -0.28, -0.06)]
    if kind == 2:
        cont += [rect(-arm, 0, -0.12, 0.0), rect(-arm - 0.05, -arm + 0.65, -0.28, -0.06)]
    fb.add(O, toward, Y, NZ, cont, POLE, PLAIN, col, col, (0.05, 3.0), seed, TWO_SIDED)


def _housing(fb: FaceBuilder, rng: Rand, x: float, z: float, y0: float, small: bool,
             facing_back: bool = False) -> None:
    hw, hh = (0.13, 0.62) if small else (rng.u(0.15, 0.19), rng.u(0.85, 1.0))
    col = pick(rng, HOUSING_COLS, 0.02, (6.0, 3.0, 1.0))
    lit = rng.int(3) if not small else 2 * rng.int(2)
    front = (LIGHT, col, col, (lit, 2 * hw, hh, 2 if small else 3))
    plain = (PLAIN, col, col, (0.03, 2.0))
    yaw = math.pi if facing_back else 0.0
    box(fb, x, z, yaw, hw, 0.13, y0, y0 + hh, TRAFFIC_LIGHT, {"*": plain, "b": front}, rng.random(), "rlbft")
    if not small and rng.random() < 0.6:  # back plate around the housing
        zz = z + (0.14 if not facing_back else -0.14)
        fb.add((x, y0, zz), EX, Y, NZ if not facing_back else PZ, [rect(-hw - 0.12, hw + 0.12, -0.05, hh + 0.05)],
               TRAFFIC_LIGHT, PLAIN, DARK, DARK, (0.02, 2.0), rng.random())


def traffic_light(fb: FaceBuilder, rng: Rand, x: float, z: float, side: int, col: tuple,
                  overhead: float = 0.0, arm_x: tuple = ()) -> None:
    """Signal post at the curb; `overhead` > 0 adds a mast arm of that length with housings at arm_x."""
    seed = rng.random()
    w = rng.u(0.14, 0.22)
    if overhead > 0:
        h = rng.u(5.6, 6.6)
        pole(fb, x, z, h, w * 1.3, col, seed)
        fb.add((x, h - 0.35, z), (-float(side), 0.0, 0.0), Y, NZ, [rect(0, overhead, 0, 0.2)], POLE, PLAIN, col, col,
               (0.05, 3.0), seed, TWO_SIDED)
        for ax in arm_x:
            _housing(fb, rng, ax, z - 0.1, h - 0.35 - 1.0, False)
    else:
        h = rng.u(3.3, 4.3)
        pole(fb, x, z, h, w, col, seed)
    y0 = rng.u(2.2, 2.7)
    _housing(fb, rng, x - side * 0.02, z - 0.2, y0, False)
    if rng.random() < 0.45:
        _housing(fb, rng, x - side * 0.02, z - 0.2, y0 - 0.85, True)
    if rng.random() < 0.3:  # the other direction's signal on the same post
        _housing(fb, rng, x, z + 0.2, y0, False, facing_back=True)


_OCTAGON = [(math.cos(a), math.sin(a)) for a in (math.pi / 8 + i * math.pi / 4 for i in range(8))]


def sign(fb: FaceBuilder, rng: Rand, x: float, z: float, col: tuple, with_pole: bool = True) -> None:
    seed = rng.random()
    kind = rng.choice((0.2, 0.12, 0.16, 0.08, 0.14, 0.1, 0.14, 0.06))
    if kind in (0, 1):
        R = rng.u(0.3, 0.42)
        shape = ellipse(0, 0, R, R, 16)
    elif kind in (2, 3):
        R = rng.u(0.45, 0.6)
        sg = 1.0 if kind == 2 else -1.0
        shape = [(0, sg * R), (-R * 0.866, -sg * R / 2), (R * 0.866, -sg * R / 2)]
    elif kind == 4:
        R = rng.u(0.3, 0.42)
        shape = rect(-R, R, -R, R)
    elif kind == 5:
        R = rng.u(0.35, 0.45)
        shape = [(0, -R), (R, 0), (0, R), (-R, 0)]
    elif kind == 6:
        R = rng.u(0.25, 0.45)
        shape = rect(-R * rng.u(1.3, 2.8), R * rng.u(1.3, 2.8), -R, R)
    else:
        R = rng.u(0.32, 0.42)
        shape = [(R * c, R * s) for c, s in _OCTAGON]
    wpanel = 2 * max(abs(p[0]) for p in shape)
    panel = pick(rng, PANEL_COLS, 0.03)
    text = (0.05, 0.05, 0.05) if panel[2] > 0.5 and panel[0] > 0.5 or panel[1] > 0.7 else (0.95, 0.95, 0.95)
    yc = rng.u(2.1, 2.8)
    if with_pole:
        pole(fb, x, z, yc + R + rng.u(0.0, 0.3), rng.u(0.08, 0.12), col, seed)
    fwd, rt = frame(rng.u(-0.35, 0.35))
    back = pick(rng, ((0.55, 0.56, 0.57),), 0.05)
    fb.add(lin((1, (x, yc, z)), (-0.06, fwd)), rt, Y, neg(fwd), [shape], TRAFFIC_SIGN, SIGN, panel, text,
           (kind, R, 0, wpanel), seed)
    fb.add(lin((1, (x, yc, z)), (-0.04, fwd)), rt, Y, fwd, [shape], TRAFFIC_SIGN, PLAIN, back, back, (0.03, 2.0),
           seed)
    if with_pole and kind != 6 and rng.random() < 0.3:  # a supplementary plate below
        sub = rect(-R, R, -R * 0.45, R * 0.45)
        y2 = yc - R - R * 0.5 - 0.05
        fb.add(lin((1, (x, y2, z)), (-0.06, fwd)), rt, Y, neg(fwd), [sub], TRAFFIC_SIGN, SIGN, (0.92, 0.92, 0.9),
               (0.05, 0.05, 0.05), (6, R * 0.45, 0, 2 * R), seed)
        fb.add(lin((1, (x, y2, z)), (-0.04, fwd)), rt, Y, fwd, [sub], TRAFFIC_SIGN, PLAIN, back, back, (0.03, 2.0),
               seed)


def building(fb: FaceBuilder, rng: Rand, side: int, xf: float, z0: float, z1: float,
             floors: int, floor_h: float, col: tuple, shop_p: float, lit: float) -> None:
    """Block of flats/offices whose facade (facing the road) stands at |x| = xf, from z0 to z1."""
    seed = rng.random()
    depth = rng.u(10, 18)
    fh = floor_h * rng.u(0.95, 1.05)
    gh = fh * rng.u(1.0, 1.3)
    H = gh + (floors - 1) * fh + rng.u(0.4, 1.5)
    ww = rng.u(0.9, 1.6)
    sp = ww + rng.u(0.7, 2.0)
    wh = min(rng.u(1.2, 1.7), fh - 1.1)
    k = rng.u(1.0, 2.5)
    wcol = tuple(min(max(g * k + rng.u(-0.02, 0.05), 0.0), 1.0) for g in GLASS_RGB)
    par = (fh, ww, sp, wh, gh, rng.u(0, sp), float(rng.random() < shop_p), lit)
    look = {"*": (FACADE, col, wcol, par)}
    xc = side * (xf + depth / 2)
    # box local frame with yaw 0: right = +x; the road-facing side is 'l' on the right of the road
    box(fb, xc, (z0 + z1) / 2, 0.0, depth / 2, (z1 - z0) / 2, 0.0, H, BUILDING, look, seed, "rlbf")
    if rng.random() < 0.35 and floors <= 5:  # pitched roof sloping up from the facade
        pitch = rng.u(0.5, 0.8)
        run = depth / 2
        up = run * math.tan(pitch)
        ln = math.hypot(run, up)
        rc = pick(rng, ROOF_COLS, 0.04)
        fb.add((side * xf, H, z0), PZ, (side * run / ln, up / ln, 0.0), (-side * up / ln, run / ln, 0.0),
               [rect(0, z1 - z0, 0, ln)], BUILDING, PLAIN, rc, rc, (0.12, 4.0), seed)
        tri = [(0, 0), (depth, 0), (run, up)]
        for zz, nz in ((z0, -1.0), (z1, 1.0)):
            fb.add((side * xf, H, zz), (side * 1.0, 0.0, 0.0), Y, (0.0, 0.0, nz), [tri], BUILDING, PLAIN, col, col,
                   (0.04, 2.0), seed)


def wall(fb: FaceBuilder, rng: Rand, side: int, x_in: float, z0: float, z1: float, h: float) -> None:
    seed = rng.random()
    th = rng.u(0.25, 0.45)
    col = pick(rng, WALL_COLS, 0.04)
    kind = float(rng.random() < 0.5)
    bw, bh = (rng.u(1.5, 3.0), h) if kind < 0.5 else (rng.u(0.25, 0.6), rng.u(0.08, 0.3))
    par = (kind, bw, bh, rng.u(0.0, 0.15), h)
    look = {"*": (WALL, col, col, par), "t": (PLAIN, _brighter(col, 1.15), col, (0.05, 3.0))}
    box(fb, side * (x_in + th / 2), (z0 + z1) / 2, 0.0, th / 2, (z1 - z0) / 2, 0.0, h, WALL_ID, look, seed)


def fence(fb: FaceBuilder, rng: Rand, side: int, x: float, z0: float, z1: float, h: float, veg: tuple) -> None:
    kind = rng.choice((0.35, 0.4, 0.25))
    if kind == 0:
        col = pick(rng, ((0.45, 0.32, 0.2), (0.85, 0.85, 0.82), (0.3, 0.38, 0.28)), 0.04)
        sp = rng.u(0.12, 0.22)
        bw = sp * rng.u(0.6, 0.85)
    elif kind == 1:
        col = pick(rng, ((0.12, 0.2, 0.14), (0.1, 0.1, 0.1), (0.5, 0.5, 0.5)), 0.03)
        sp = rng.u(0.12, 0.2)
        bw = rng.u(0.025, 0.045)
    else:
        col = pick(rng, ((0.55, 0.56, 0.55),), 0.04)
        sp = rng.u(0.08, 0.12)
        bw = 0.015
    back = _brighter(veg, rng.u(0.4, 0.8), (0.03, 0.03, 0.03))
    fb.add((side * x, 0.0, z0), PZ, Y, (-float(side), 0.0, 0.0), [rect(0, z1 - z0, 0, h)], FENCE_ID, FENCE, col,
           back, (kind, rng.u(2.0, 3.0), sp, bw, h), rng.random(), TWO_SIDED)
