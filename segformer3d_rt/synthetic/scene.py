"""Drives of the synthetic world: a per-seed style (street cross-section, architecture, traffic, weather,
camera) and the content of every 40 m segment of road, generated from (seed, stream, segment) alone so
that any frame can be rendered on demand and consecutive frames see the same world."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import objects as ob
from .raster import FaceBuilder, Faces
from .shade import CURB, FACADE, FOLIAGE, GroundSpec, Look

SEG = 40.0  # metres of road per generated segment of static content
SEG_MOVING = 80.0  # ... and of a moving stream (sparser content: fewer, longer segments)
STREAM_BLOCK, STREAM_LANE, STREAM_WALK, STREAM_RIDE = 1, 10, 30, 40
FRONT_BUILDINGS, FRONT_YARD, FRONT_WALL, FRONT_FENCE, FRONT_PARK = range(5)


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def seg_rng(seed: int, stream: int, k: int) -> np.random.Generator:
    """Generator of one (drive, stream, segment); independent of render order."""
    h = _mix64(_mix64(_mix64(seed & 0xFFFFFFFFFFFFFFFF) ^ stream) ^ (k & 0xFFFFFFFFFFFFFFFF))
    return np.random.default_rng(h)


@dataclass
class Lane:
    x: float
    v: float  # m/s along +z
    yaw: float
    gap: float  # mean free gap between vehicles, metres
    ego: bool


@dataclass
class Style:
    """Everything that is constant over one drive."""

    seed: int
    # camera
    cam_h: float
    pitch0: float
    hfov: float
    pp: tuple[float, float]  # principal point offset, fraction of width / height
    speed: float
    ego_x: float
    jitter: np.ndarray  # yaw amp, yaw bias, pitch amp, phases...
    # street
    ground: GroundSpec
    park: tuple[float, float]
    lanes: list[Lane]
    # frontage and furniture
    urban: float
    front_w: tuple
    floors: tuple[int, int]
    floor_h: float
    bcols: tuple
    shop_p: float
    lit: float
    trees: tuple[bool, bool]
    tree_sp: float
    tree_phase: tuple[float, float]
    lamp_sp: float
    lamp_phase: tuple[float, float]
    lamp_h: float
    lamp_w: float
    lamp_kind: int
    pole_col: tuple
    veg: tuple
    p_cross: float
    sign_rate: float
    light_p: float
    person_rate: float
    bike_p: float
    veh_p: tuple  # car, truck, bus
    walk_gap: float
    walk_v: tuple[float, float, float, float]  # right +, right -, left +, left -
    ride_gap: float
    ride_v: tuple[float, float]
    backdrop: float  # distance of the closing skyline ahead of the camera
    look: Look
    hood: np.ndarray | None  # (k, 2) polygon in image fractions, or None


def _look(rng: ob.Rand) -> Look:
    kind = rng.choice((0.45, 0.33, 0.1, 0.12))  # sunny, overcast, fog, low sun
    az = rng.u(0, 2 * math.pi)
    el = math.radians(rng.u(15, 60) if kind != 3 else rng.u(4, 14))
    sun = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    j = lambda a: np.array([rng.u(-a, a) for _ in range(3)])  # noqa: E731
    if kind == 0:
        sun_rgb = np.array([1.0, 0.95, 0.86]) * rng.u(0.45, 0.75)
        amb = np.array([0.52, 0.56, 0.66]) * rng.u(0.55, 0.75)
        zen = np.array([0.25, 0.45, 0.82]) + j(0.06)
        hor = np.array([0.70, 0.80, 0.92]) + j(0.04)
        cloud, cl, vis = np.array([0.95, 0.95, 0.97]), rng.u(0.0, 0.55), rng.u(300, 1500)
    elif kind in (1, 2):
        sun_rgb = np.array([1.0, 0.97, 0.92]) * rng.u(0.05, 0.2)
        amb = np.array([0.82, 0.83, 0.86]) * rng.u(0.75, 0.95)
        g = rng.u(0.62, 0.8)
        zen = np.array([g, g + 0.02, g + 0.06]) + j(0.03)
        hor = np.array([0.80, 0.81, 0.83]) + j(0.03)
        cloud, cl = np.array([0.85, 0.85, 0.87]) * rng.u(0.85, 1.05), rng.u(0.7, 1.0)
        vis = rng.u(150, 600) if kind == 1 else rng.u(60, 140)
    else:
        sun_rgb = np.array([1.0, 0.68, 0.42]) * rng.u(0.5, 0.75)
        amb = np.array([0.42, 0.42, 0.52]) * rng.u(0.8, 1.0)
        zen = np.array([0.22, 0.30, 0.55]) + j(0.05)
        hor = np.array([0.92, 0.68, 0.48]) + j(0.05)
        cloud, cl, vis = np.array([0.9, 0.72, 0.6]), rng.u(0.0, 0.6), rng.u(250, 1000)
    hor = np.clip(hor, 0, 1)
    gain = rng.u(0.9, 1.2) * (1.0 + j(0.05))
    return Look(sun=sun, sun_rgb=sun_rgb.astype(np.float32), amb_rgb=amb.astype(np.float32),
                zenith=np.clip(zen, 0, 1).astype(np.float32), horizon=hor.astype(np.float32),
                cloud_rgb=cloud.astype(np.float32), cloudiness=cl, haze_rgb=(hor * 0.95).astype(np.float32),
                visibility=vis, gain=gain.astype(np.float32), gamma=rng.u(0.85, 1.15), contrast=rng.u(0.9, 1.15),
                noise=rng.u(0.5, 4.0), blur=rng.u(0.35, 0.9), vignette=rng.u(0.0, 0.35))


def make_style(seed: int) -> Style:
    gen = seg_rng(seed, 0, 0)
    rng = ob.Rand(gen)
    # street cross-section: right-hand traffic, road centre line at x = 0
    lw = rng.u(2.9, 3.6)
    n_r = 1 + rng.choice((0.6, 0.4))
    n_l = rng.choice((0.15, 0.6, 0.25))
    park = tuple(2.2 if rng.random() < 0.5 else 0.0 for _ in range(2))
    edge = (n_r * lw + park[0], n_l * lw + park[1])
    grass = tuple(rng.u(1.0, 2.5) if rng.random() < 0.35 else 0.0 for _ in range(2))
    sidewalk = tuple(rng.u(2.4, 5.5) for _ in range(2))
    bike = tuple(1.3 if (rng.random() < 0.35 and sidewalk[i] > 3.2) else 0.0 for i in range(2))
    marks: list[tuple[float, float, float, float]] = []
    dash = rng.u(2.5, 4.0)
    period = dash * rng.u(2.0, 3.0)
    if n_l > 0:
        if rng.random() < 0.15:
            marks += [(-0.12, 0.06, 0, 0), (0.12, 0.06, 0, 0)]
        else:
            marks.append((0.0, 0.06, dash, period) if rng.random() < 0.5 else (0.0, 0.06, 0, 0))
    marks += [(i * lw, 0.06, dash, period) for i in range(1, n_r)]
    marks += [(-i * lw, 0.06, dash, period) for i in range(1, n_l)]
    for sgn, n, pk, e in ((1, n_r, park[0], edge[0]), (-1, n_l, park[1], edge[1])):
        if pk > 0 and rng.random() < 0.6:
            marks.append((sgn * n * lw, 0.07, 0, 0))
        elif pk == 0 and n > 0 and rng.random() < 0.5:
            marks.append((sgn * (e - 0.35), 0.07, 0, 0))
    pave = ob.pick(rng, ((0.55, 0.55, 0.53), (0.62, 0.58, 0.5), (0.55, 0.40, 0.35),
                        (0.68, 0.68, 0.66), (0.48, 0.48, 0.5)), 0.03)
    asph = rng.u(0.2, 0.42)
    ground = GroundSpec(
        edge=edge, grass=grass, sidewalk=sidewalk, bike=bike, marks=marks,
        mark_rgb=np.array([0.88, 0.88, 0.86], np.float32) * rng.u(0.8, 1.05),
        asphalt=np.clip(asph + np.array([rng.u(-0.015, 0.015) for _ in range(3)]), 0, 1).astype(np.float32),
        asphalt_var=rng.u(0.05, 0.16), pave_rgb=np.array(pave, np.float32),
        pave_size=rng.u(0.25, 0.7) if rng.random() < 0.7 else rng.u(1.0, 1.6),
        curb_rgb=np.full(3, rng.u(0.6, 0.75), np.float32),
        bike_rgb=np.array(ob.pick(rng, ((0.55, 0.27, 0.23), (0.35, 0.35, 0.36)), 0.03), np.float32),
        grass_rgb=np.array(ob.pick(rng, ((0.36, 0.48, 0.2), (0.42, 0.52, 0.26), (0.5, 0.5, 0.3)), 0.04),
                           np.float32),
        dirt_rgb=np.array(ob.pick(rng, ((0.45, 0.38, 0.28), (0.5, 0.45, 0.36)), 0.03), np.float32),
        dirt_amount=rng.u(0.0, 0.5), block=SEG)
    ego = rng.int(n_r)
    speed = rng.u(6.0, 14.0)
    lanes = [Lane((i + 0.5) * lw, speed if i == ego else max(speed + rng.u(-3, 3), 2.0), 0.0,
                  rng.u(15, 45) if i == ego else rng.u(8, 30), i == ego) for i in range(n_r)]
    lanes += [Lane(-(i + 0.5) * lw, -rng.u(8, 14), math.pi, rng.u(8, 30), False) for i in range(n_l)]
    urban = rng.u(0, 1)
    front_w = (0.3 + 0.9 * urban, 0.4, 0.25, 0.25 + 0.2 * (1 - urban), 0.1 + 0.4 * (1 - urban))
    lo = 2 + int(3 * urban)
    look = _look(rng)
    veg = ob.pick(rng, ((0.18, 0.32, 0.1), (0.22, 0.36, 0.12), (0.14, 0.26, 0.1)), 0.03) \
        if rng.random() > 0.1 else ob.pick(rng, ((0.45, 0.38, 0.12),), 0.05)
    hood = None
    if rng.random() < 0.2:
        top, curve = rng.u(0.84, 0.93), rng.u(0.03, 0.1)
        xs = np.linspace(0, 1, 9)
        hood = np.concatenate([np.stack([xs, top + curve * (2 * xs - 1) ** 2], 1), [[1, 1.01], [0, 1.01]]])
    jitter = np.concatenate([[math.radians(rng.u(0.2, 1.2)), math.radians(rng.u(-2, 2)),
                              math.radians(rng.u(0.1, 0.35))], [rng.u(0, 2 * math.pi) for _ in range(5)]])
    walk_v = tuple(rng.u(1.0, 1.6) * s for s in (1, -1, 1, -1))
    return Style(
        seed=seed, cam_h=rng.u(1.25, 1.65), pitch0=math.radians(rng.u(-2.5, 4.0)),
        hfov=math.radians(rng.u(54, 66)), pp=(rng.u(-0.02, 0.02), rng.u(-0.03, 0.03)), speed=speed,
        ego_x=lanes[ego].x, jitter=jitter, ground=ground, park=park, lanes=lanes, urban=urban, front_w=front_w,
        floors=(lo, lo + 2 + int(4 * urban)), floor_h=rng.u(2.9, 3.6),
        bcols=tuple(ob.BUILDING_COLS[i] for i in gen.choice(len(ob.BUILDING_COLS), rng.int(4, 9), replace=False)),
        shop_p=0.6 * urban, lit=rng.u(0.0, 0.12) + (0.15 if look.sun_rgb[2] < 0.35 else 0.0),
        trees=(rng.random() < 0.5, rng.random() < 0.5), tree_sp=rng.u(7, 14),
        tree_phase=(rng.u(0, 14), rng.u(0, 14)), lamp_sp=rng.u(18, 34),
        lamp_phase=(rng.u(0, 34), rng.u(0, 34)), lamp_h=rng.u(5.5, 9.0), lamp_w=rng.u(0.16, 0.3),
        lamp_kind=rng.choice((0.6, 0.25, 0.15)), pole_col=ob.pick(rng, ob.POLE_COLS, 0.03), veg=veg,
        p_cross=rng.u(0.4, 0.75), sign_rate=rng.u(1.0, 2.5), light_p=rng.u(0.3, 0.6),
        person_rate=rng.u(1.5, 4.0), bike_p=rng.u(0.35, 0.75),
        veh_p=(0.84, 0.09, 0.07), walk_gap=rng.u(10, 22), walk_v=walk_v, ride_gap=rng.u(15, 35),
        ride_v=(rng.u(3.5, 7.0), -rng.u(3.5, 7.0)), backdrop=rng.u(60, 120), look=look, hood=hood)


# ---------------------------------------------------------------- segments


def _grid(phase: float, step: float, z0: float, z1: float) -> np.ndarray:
    n0 = math.ceil((z0 - phase) / step)
    return phase + step * np.arange(n0, n0 + int((z1 - z0) / step) + 2)


class _Side:
    """Cross-section helper of one side of the street (side = +1 right, -1 left)."""

    def __init__(self, st: Style, side: int) -> None:
        i = 0 if side > 0 else 1
        g = st.ground
        self.side, self.i = side, i
        self.edge = g.edge[i]
        self.grass_end = CURB + g.grass[i]
        self.bike = g.bike[i]
        self.sw_end = self.grass_end + g.sidewalk[i]
        self.park = st.park[i]

    def x(self, d: float) -> float:
        """World x of the point at outward distance d from the curb line."""
        return self.side * (self.edge + d)

    def walk_d(self, rng: ob.Rand) -> float:
        return rng.u(self.grass_end + self.bike + 0.3, max(self.sw_end - 0.35, self.grass_end + self.bike + 0.35))


def _rows_of_buildings(fb: FaceBuilder, rng: ob.Rand, st: Style, sd: _Side, d: float, z0: float,
                       z1: float, wmin: float, wmax: float, gap_p: float, gmin: float, gmax: float,
                       fill_gaps: bool = False) -> None:
    zc = z0 + (0.0 if gap_p < 0.5 else rng.u(0, gmax))
    while zc < z1 - 3.0:
        w = min(rng.u(wmin, wmax), z1 - zc)
        floors = rng.int(st.floors[0], st.floors[1] + 1)
        col = ob.pick(rng, st.bcols, 0.05)
        if fb.sees(sd.x(d + 8), zc + w / 2, w / 2 + 10):
            ob.building(fb, rng, sd.side, sd.edge + d, zc, zc + w, floors, st.floor_h, col, st.shop_p, st.lit)
        zc += w
        if rng.random() < gap_p:
            g = min(rng.u(gmin, gmax), z1 - zc)
            if fill_gaps and g > 1.0 and rng.random() < 0.7 and fb.sees(sd.x(d), zc + g / 2, g / 2 + 2):
                # a courtyard wall or a fence with a gate closes the gap between two buildings
                if rng.random() < 0.5:
                    ob.wall(fb, rng, sd.side, sd.edge + d, zc, zc + g, rng.u(1.5, 3.0))
                else:
                    ob.fence(fb, rng, sd.side, sd.edge + d + 0.1, zc, zc + g, rng.u(1.4, 2.2), st.veg)
            zc += g


def _trees_behind(fb: FaceBuilder, rng: ob.Rand, st: Style, sd: _Side, d0: float, d1: float,
                  z0: float, n: int, scale: tuple[float, float]) -> None:
    for _ in range(n):
        x, z, sc = sd.x(rng.u(d0, d1)), z0 + rng.u(0, SEG), rng.u(*scale)
        if fb.sees(x, z, 4 * sc):
            ob.tree(fb, rng, x, z, st.veg, sc)


def _frontage(fb: FaceBuilder, rng: ob.Rand, st: Style, sd: _Side, z0: float) -> None:
    z1 = z0 + SEG
    kind = rng.choice(st.front_w)
    f = sd.sw_end
    if kind == FRONT_BUILDINGS:
        _rows_of_buildings(fb, rng, st, sd, f, z0, z1, 8, 26, 0.35, 2, 7, True)
        return
    if kind == FRONT_YARD:
        setback = rng.u(3, 9)
        b = rng.int(3)
        if b == 0:
            ob.hedge(fb, rng, sd.x(f + 0.6), z0 + 0.3, z1 - 0.3, 0.4, rng.u(0.8, 1.8), st.veg)
        elif b == 1:
            ob.fence(fb, rng, sd.side, sd.edge + f + 0.2, z0, z1, rng.u(1.0, 1.8), st.veg)
        elif b == 2:
            ob.wall(fb, rng, sd.side, sd.edge + f + 0.1, z0, z1, rng.u(0.6, 1.4))
        _rows_of_buildings(fb, rng, st, sd, f + setback, z0, z1, 10, 20, 0.6, 3, 10)
        for _ in range(rng.int(0, 3)):
            x, z = sd.x(f + rng.u(1.2, setback - 0.5)), z0 + rng.u(0, SEG)
            if fb.sees(x, z, 2):
                ob.bush(fb, rng, x, z, st.veg)
        _trees_behind(fb, rng, st, sd, f + 1.5, f + setback, z0, rng.int(0, 3), (0.9, 1.3))
        return
    if kind == FRONT_WALL:
        ob.wall(fb, rng, sd.side, sd.edge + f + 0.1, z0, z1, rng.u(1.6, 3.0))
        _trees_behind(fb, rng, st, sd, f + 2, f + 9, z0, rng.int(2, 6), (1.1, 1.6))
    elif kind == FRONT_FENCE:
        ob.fence(fb, rng, sd.side, sd.edge + f + 0.2, z0, z1, rng.u(1.2, 2.2), st.veg)
        if rng.random() < 0.5:
            ob.hedge(fb, rng, sd.x(f + 1.2), z0 + 0.5, z1 - 0.5, 0.5, rng.u(1.0, 2.5), st.veg)
        _trees_behind(fb, rng, st, sd, f + 2, f + 10, z0, rng.int(1, 5), (1.0, 1.5))
    else:  # park, often behind a low wall
        if rng.random() < 0.5:
            ob.wall(fb, rng, sd.side, sd.edge + f + 0.1, z0, z1, rng.u(0.5, 1.3))
        _trees_behind(fb, rng, st, sd, f + 1.5, f + 22, z0, rng.int(4, 9), (1.0, 1.6))
        for _ in range(rng.int(2, 6)):
            x, z = sd.x(f + rng.u(1.0, 15)), z0 + rng.u(0, SEG)
            if fb.sees(x, z, 2):
                ob.bush(fb, rng, x, z, st.veg)
    # close the view behind open frontage: a rear row of buildings or a line of big trees
    back = f + rng.u(14, 35)
    if rng.random() < 0.6:
        _rows_of_buildings(fb, rng, st, sd, back, z0, z1, 12, 30, 0.3, 3, 8)
    else:
        for zt in np.arange(z0 + rng.u(0, 5), z1, rng.u(4, 7)).tolist():
            x, sc = sd.x(back + rng.u(-2, 2)), rng.u(1.4, 2.0)
            if fb.sees(x, zt, 4 * sc):
                ob.tree(fb, rng, x, zt, st.veg, sc)


def _parked(fb: FaceBuilder, rng: ob.Rand, st: Style, sd: _Side, z0: float, cz: float) -> None:
    x = sd.x(-sd.park / 2)
    yaw = 0.0 if sd.side > 0 else math.pi
    occ = rng.u(0.4, 0.95)
    z = z0 + rng.u(0, 4)
    while z < z0 + SEG - 2:
        if not math.isnan(cz) and cz - 9 < z < cz + 5:
            z += 2.0
            continue
        if rng.random() > occ:
            z += rng.u(4, 8)
            continue
        r = rng.random()
        if not fb.sees(x, z + 5, 7):
            z += 6.0
            continue
        if r < 0.9:
            L = ob.car(fb, rng, x + rng.u(-0.15, 0.15), z + 2.6, yaw)
        elif r < 0.97:
            L = ob.truck(fb, rng, x, z + 5.0, yaw)
        else:
            L = ob.bus(fb, rng, x, z + 6.3, yaw)
        z += max(L, 5.2) + rng.u(0.8, 3.0)


def _side_block(fb: FaceBuilder, rng: ob.Rand, st: Style, side: int, z0: float, cz: float) -> None:
    sd = _Side(st, side)
    g = st.ground.grass[sd.i]
    near = (lambda z, a, b: (not math.isnan(cz)) and cz - a < z < cz + b)  # noqa: E731
    _frontage(fb, rng, st, sd, z0)
    d_pole = CURB + 0.35 if g < 0.8 else CURB + g / 2
    lamps = [float(z) for z in _grid(st.lamp_phase[sd.i], st.lamp_sp, z0, z0 + SEG) if z0 <= z < z0 + SEG]
    for zl in lamps:
        if not near(zl, 3, 6) and fb.sees(sd.x(d_pole), zl, 2.5):
            ob.lamp(fb, rng, sd.x(d_pole), zl, side, st.lamp_h, st.lamp_w, st.pole_col, st.lamp_kind)
    if st.trees[sd.i]:
        d_tree = CURB + g / 2 if g >= 1.0 else CURB + 0.75
        for zt in _grid(st.tree_phase[sd.i], st.tree_sp, z0, z0 + SEG):
            if z0 <= zt < z0 + SEG and not near(zt, 4, 6) and all(abs(zt - zl) > 2.5 for zl in lamps) \
                    and fb.sees(sd.x(d_tree), zt, 4):
                ob.tree(fb, rng, sd.x(d_tree), float(zt), st.veg, rng.u(0.9, 1.3))
    for _ in range(rng.poisson(st.sign_rate)):
        zs = z0 + rng.u(0, SEG)
        if not near(zs, 3, 5) and fb.sees(sd.x(CURB + 0.3), zs, 1.5):
            ob.sign(fb, rng, sd.x(CURB + 0.3), zs, st.pole_col)
    if not math.isnan(cz):
        over, arm = 0.0, ()
        if side > 0 and rng.random() < 0.5:
            over = min(rng.u(3.5, 7.0), sd.edge + 0.4)
            n = 1 + int(rng.random() < 0.5)
            arm = tuple(sd.x(CURB + 0.4) - side * rng.u(2.0, over - 0.3) for _ in range(n))
        ob.traffic_light(fb, rng, sd.x(CURB + 0.4), cz - 1.2, side, st.pole_col, over, arm)
        if rng.random() < 0.4:  # the signal across the junction
            ob.traffic_light(fb, rng, sd.x(CURB + 0.4), cz + 5.5, side, st.pole_col)
        for _ in range(rng.int(0, 4)):  # people waiting to cross
            x, z = sd.x(sd.grass_end + rng.u(0.3, 1.6)), cz + rng.u(-1, 4)
            if fb.sees(x, z, 1):
                ob.person(fb, rng, x, z)
    elif rng.random() < st.light_p:
        ob.traffic_light(fb, rng, sd.x(CURB + 0.4), z0 + rng.u(0, SEG), side, st.pole_col)
    if sd.park > 0:
        _parked(fb, rng, st, sd, z0, cz)
    if rng.random() < st.bike_p:
        n = rng.int(1, 5)
        zb = z0 + rng.u(0, SEG - 4)
        along = rng.random() < 0.3
        d = sd.sw_end - 0.9 if rng.random() < 0.5 else sd.grass_end + 0.7
        for j in range(n if fb.sees(sd.x(d), zb, 4) else 0):
            yaw = rng.u(-0.2, 0.2) if along else math.pi / 2 * rng.sign() + rng.u(-0.25, 0.25)
            ob.bicycle(fb, rng, sd.x(d + (0 if not along else 0.0)), zb + j * (0.7 if not along else 2.0), yaw,
                       False)
    for _ in range(rng.poisson(st.person_rate)):
        zp, dp = z0 + rng.u(0, SEG), sd.walk_d(rng)
        for _ in range(1 + rng.choice((2, 1, 1)) if fb.sees(sd.x(dp), zp, 2) else 0):
            ob.person(fb, rng, sd.x(dp + rng.u(-0.4, 0.4)), zp + rng.u(-0.7, 0.7))


def block(st: Style, k: int, fb: FaceBuilder) -> float:
    """Adds the static content of road segment k (both sides); returns the z of its zebra crossing (nan: none)."""
    rng = ob.Rand(seg_rng(st.seed, STREAM_BLOCK, k))
    z0 = k * SEG
    cz = z0 + rng.u(8, SEG - 12) if rng.random() < st.p_cross else math.nan
    for side in (1, -1):
        _side_block(fb, rng, st, side, z0, cz)
    if not math.isnan(cz):
        lo, hi = -st.ground.edge[1] + 0.5, st.ground.edge[0] - 0.5
        for _ in range(rng.int(0, 4)):
            x = rng.u(lo, hi)
            if abs(x - st.ego_x) > 2.3 and fb.sees(x, cz + 2, 3):
                ob.person(fb, rng, x, cz + rng.u(0.5, 3.5))
        if rng.random() < 0.35:
            x = rng.u(lo, hi)
            if abs(x - st.ego_x) > 2.6:
                ob.bicycle(fb, rng, x, cz + rng.u(1.0, 3.0), math.pi / 2 * rng.sign(), True)
    return cz


def lane_segment(st: Style, j: int, k: int, fb: FaceBuilder) -> None:
    """Vehicles of lane j in its own moving frame, segment k."""
    ln = st.lanes[j]
    rng = ob.Rand(seg_rng(st.seed, STREAM_LANE + j, k))
    z = k * SEG_MOVING + rng.exp(ln.gap)
    while z < (k + 1) * SEG_MOVING:
        r = rng.random()
        kind, half = (0, 2.6) if r < st.veh_p[0] else ((1, 5.0) if r < st.veh_p[0] + st.veh_p[1] else (2, 6.3))
        zc = z + half
        x = ln.x + rng.u(-0.25, 0.25)
        # the camera rides in the ego lane's frame at z = 0: keep that stretch free
        if (ln.ego and -half - 12 < zc < half + 8) or not fb.sees(x, zc, half + 1):
            L = 2 * half
        else:
            L = (ob.car, ob.truck, ob.bus)[kind](fb, rng, x, zc, ln.yaw)
        z += L + 2.0 + rng.exp(ln.gap)


def walk_segment(st: Style, side: int, direction: int, k: int, fb: FaceBuilder) -> None:
    sd = _Side(st, side)
    rng = ob.Rand(seg_rng(st.seed, STREAM_WALK + 2 * sd.i + (direction < 0), k))
    z = k * SEG_MOVING + rng.exp(st.walk_gap)
    while z < (k + 1) * SEG_MOVING:
        x = sd.x(sd.walk_d(rng))
        if fb.sees(x, z, 1):
            ob.person(fb, rng, x, z)
        z += 1.0 + rng.exp(st.walk_gap)


def ride_segment(st: Style, side: int, k: int, fb: FaceBuilder) -> None:
    sd = _Side(st, side)
    rng = ob.Rand(seg_rng(st.seed, STREAM_RIDE + sd.i, k))
    d = sd.grass_end + sd.bike / 2 if sd.bike > 0 else -(sd.park + 0.8)
    base = 0.0 if side > 0 else math.pi
    z = k * SEG_MOVING + rng.exp(st.ride_gap)
    while z < (k + 1) * SEG_MOVING:
        # turned away from the road axis so that bicycle and rider show their side, not a sliver
        yaw = base + rng.sign() * rng.u(0.35, 0.8)
        x = sd.x(d + rng.u(-0.2, 0.2))
        if fb.sees(x, z, 1.5):
            ob.bicycle(fb, rng, x, z, yaw, True)
        z += 3.0 + rng.exp(st.ride_gap)


def backdrop(st: Style) -> Faces:
    """Skyline closing the street ahead, in the camera's frame (z = st.backdrop at camera z = 0)."""
    rng = ob.Rand(seg_rng(st.seed, 50, 0))
    D = st.backdrop
    fb = FaceBuilder()
    x = -1.6 * D
    while x < 1.6 * D:
        w = rng.u(10, 32)
        h = rng.u(8, 14) + rng.u(0, 22) * st.urban
        col = ob.pick(rng, st.bcols, 0.05)
        fh = st.floor_h
        par = (fh, rng.u(0.9, 1.6), rng.u(2.5, 3.8), min(rng.u(1.2, 1.6), fh - 1.1), fh, 0.0, 0.0, st.lit)
        wcol = ob._brighter(ob.GLASS_RGB, rng.u(1.2, 2.5))
        fb.add((0.0, 0.0, D), ob.EX, ob.Y, ob.NZ, [ob.rect(x, x + w, 0, h)], ob.BUILDING, FACADE, col, wcol, par,
               rng.random())
        x += w
    # a tree line in front of part of the skyline
    x = -1.6 * D
    while x < 1.6 * D:
        w = rng.u(15, 60)
        if rng.random() < 0.75 - 0.4 * st.urban:
            xs = np.linspace(x, x + w, max(int(w / 2.5), 3))
            top = rng.u(6, 13) + np.array([rng.u(-1.5, 1.5) for _ in xs])
            poly = np.concatenate([np.stack([xs, top], 1), [[x + w, 0.0], [x, 0.0]]])
            hi = ob._brighter(st.veg, 1.4)
            fb.add((0.0, 0.0, D - 3.0), ob.EX, ob.Y, ob.NZ, [poly], ob.VEGETATION, FOLIAGE,
                   ob.pick(rng, (st.veg,), 0.03), hi, (5.0, 6.0, 0.6), rng.random())
        x += w
    return fb.build()
