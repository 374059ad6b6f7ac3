"""Deferred shading of the synthetic world: per-pixel colour from the rasterised face ids.

Every pixel knows its face, depth and face coordinates (s, t) in metres, so textures are procedural
functions of (s, t) evaluated once per pixel, grouped by material. Labels and depth come from the
raster alone; haze, lighting, noise and blur touch only the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .raster import FIRST_FACE_ID, GROUND_ID, SKY_ID, TWO_SIDED, Camera, Faces, Raster

# materials
(SKY, GROUND, FACADE, PLAIN, FOLIAGE, FENCE, WALL, CAR_SIDE, CAR_END, GLASS, WHEEL, PERSON, LIGHT, SIGN,
 BUS_SIDE, PANEL) = range(16)
N_MATERIALS = 16

ROAD, SIDEWALK, TERRAIN, SKY_LABEL = 0, 1, 9, 10

_TEX = 256  # noise tables are _TEX x _TEX, indexed with wrap-around
_MASK = _TEX - 1


@dataclass
class Look:
    """Lighting, weather and camera response of one drive."""

    sun: np.ndarray  # unit vector towards the sun (world)
    sun_rgb: np.ndarray
    amb_rgb: np.ndarray
    zenith: np.ndarray
    horizon: np.ndarray
    cloud_rgb: np.ndarray
    cloudiness: float  # 0 clear .. 1 overcast
    haze_rgb: np.ndarray
    visibility: float  # metres: haze transmittance exp(-z / visibility)
    gain: np.ndarray  # white balance x exposure
    gamma: float
    contrast: float
    noise: float  # sensor noise sigma, 8-bit levels
    blur: float  # Gaussian sigma in pixels at 512 px width
    vignette: float


@dataclass
class GroundSpec:
    """Cross-section of the street (outward distances from the curb line of each side) and paint."""

    edge: tuple[float, float]  # curb line |x| on the right, left
    grass: tuple[float, float]  # width of the grass strip between curb and sidewalk
    sidewalk: tuple[float, float]
    bike: tuple[float, float]  # bike path width inside the sidewalk (0: none)
    marks: list[tuple[float, float, float, float]]  # (x, half width, dash length, period); period 0 = solid
    mark_rgb: np.ndarray
    asphalt: np.ndarray
    asphalt_var: float
    pave_rgb: np.ndarray
    pave_size: float
    curb_rgb: np.ndarray
    bike_rgb: np.ndarray
    grass_rgb: np.ndarray
    dirt_rgb: np.ndarray
    dirt_amount: float
    block: float  # crosswalk table: block length
    cross_k0: int = 0  # first block of `cross_z`
    cross_z: np.ndarray | None = None  # per block: start of the zebra crossing (nan: none)


CURB = 0.2  # metres of curb stone (labelled sidewalk) at every road edge


class Textures:
    """Per-drive noise tables: smooth (features ~16 texels) and fine (features ~3 texels), zero mean,
    stored flat for fast wrap-around lookups."""

    def __init__(self, rng: np.random.Generator) -> None:
        def table(cells: int) -> np.ndarray:
            g = rng.standard_normal((cells, cells)).astype(np.float32)
            pad = 2  # wrap-padding, resize, crop: the table tiles seamlessly
            g = np.pad(g, pad, mode="wrap")
            k = _TEX // cells
            big = cv2.resize(g, ((cells + 2 * pad) * k, (cells + 2 * pad) * k), interpolation=cv2.INTER_CUBIC)
            big = big[pad * k:pad * k + _TEX, pad * k:pad * k + _TEX]
            return np.ascontiguousarray(big / (big.std() + 1e-6) * 0.5).ravel()

        self.smooth = table(16)
        self.fine = table(64)
        self.smooth.flags.writeable = False
        self.fine.flags.writeable = False


# one read-only set for every drive (each face samples it at its own random offset): a constant, not state
TEXTURES = Textures(np.random.default_rng(0x5EED))


def _lookup(tab: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.take(tab, ((b.astype(np.int32) & _MASK) << 8) | (a.astype(np.int32) & _MASK))


def _lod(period: np.ndarray | float, fp: np.ndarray) -> np.ndarray:
    """1 where a pattern of this period (metres) spans >= 4 pixels, fading to 0 at 1.5 pixels."""
    return np.clip((period / fp - 1.5) * 0.4, 0.0, 1.0)


def _hash(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Cheap integer hash of cell indices to [0, 1)."""
    x = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (seed * 65521.0).astype(np.int64)
    x = (x ^ (x >> 13)) * 1274126177
    return ((x >> 9) & 0xFFFF).astype(np.float32) / 65536.0


def _mix(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> np.ndarray:
    return a + (b - a) * m[:, None]


@dataclass
class _Px:
    """The pixels of one material: face coordinates, depth, footprint and face attributes."""

    s: np.ndarray
    t: np.ndarray
    z: np.ndarray
    fp: np.ndarray  # metres per pixel at this depth
    col: np.ndarray
    col2: np.ndarray
    par: np.ndarray
    seed: np.ndarray


def _hash1(i: np.ndarray, j: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Float hash of two cell indices and a seed to [0, 1) (the classic sin-fract hash)."""
    x = np.sin(i * np.float32(12.9898) + j * np.float32(78.233) + seed * np.float32(437.585)) * np.float32(43758.547)
    return x - np.floor(x)


def _facade(p: _Px, tx: Textures) -> np.ndarray:
    fh, ww, sp, wh, gh, off, shop, lit = p.par.T
    a = p.s + off
    ix = np.floor(a / sp)
    fx = np.abs(a - ix * sp - sp * 0.5)
    tt = p.t - gh
    iy = np.floor(tt / fh)
    fy = tt - iy * fh
    win = (fx < ww * 0.5) & (fy > 0.85) & (fy < 0.85 + wh) & (tt > 0)
    win |= (shop > 0.5) & (p.t > 0.35) & (p.t < gh - 0.45) & (fx < sp * 0.43)  # shop windows
    h = _hash1(ix, iy, p.seed)
    b = 1.0 + 0.08 * _lookup(tx.smooth, p.s * 0.4 + p.seed * 53, p.t * 0.4)
    b -= ((fy < 0.18) & (tt > 0) & (p.seed > 0.5)) * np.float32(0.16)  # string course on some buildings
    # window weight: the window mask up close, the mean window fraction where windows are sub-pixel
    k = _lod(sp, p.fp)
    frac = np.clip(ww * wh / (sp * fh), 0, 1)
    wgt = frac + (win - frac) * k
    gw = 0.9 + (h - 0.5) * (0.7 * k)
    rgb = p.col * (b * (1 - wgt))[:, None] + p.col2 * (gw * wgt)[:, None]
    on = win & (h > 1.0 - lit)  # lit windows
    rgb[on] += np.array([0.7, 0.6, 0.3], np.float32) * k[on, None]
    return rgb


def _plain(p: _Px, tx: Textures) -> np.ndarray:
    amp, sc, grad, top = p.par[:, 0], p.par[:, 1], p.par[:, 2], p.par[:, 3]
    sc = np.maximum(sc, 0.05)
    n = _lookup(tx.fine, p.s * sc + p.seed * 131, p.t * sc) * _lod(1.0 / sc, p.fp)
    g = 1.0 - grad * np.clip(1.0 - p.t / np.maximum(top, 0.1), 0, 1)
    return p.col * ((1.0 + amp * n) * g)[:, None]


def _lookup_smooth(tab: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear wrap-around lookup (for textures seen up close)."""
    a0, b0 = np.floor(a), np.floor(b)
    fa, fb = a - a0, b - b0
    i0 = (a0.astype(np.int32) & _MASK)
    j0 = (b0.astype(np.int32) & _MASK) << 8
    i1 = (i0 + 1) & _MASK
    j1 = (j0 + _TEX) & (_MASK << 8)
    top = tab[j0 | i0] * (1 - fa) + tab[j0 | i1] * fa
    bot = tab[j1 | i0] * (1 - fa) + tab[j1 | i1] * fa
    return top + (bot - top) * fb


def _foliage(p: _Px, tx: Textures) -> np.ndarray:
    ct, cr, ls = p.par[:, 0], np.maximum(p.par[:, 1], 0.2), np.maximum(p.par[:, 2], 0.5)
    n1 = _lookup_smooth(tx.fine, p.s * ls * 5 + p.seed * 73, p.t * ls * 5) * _lod(0.6 / ls, p.fp)
    n2 = _lookup(tx.smooth, p.s * ls * 1.5 + p.seed * 31, p.t * ls * 1.5)
    b = np.clip(0.8 + 0.35 * n2 + 0.45 * n1 + 0.18 * np.clip((p.t - ct) / cr, -1, 1), 0.25, 1.6)
    hi = np.clip(n1 * 0.9 - 0.09, 0, 0.45)
    return _mix(p.col, p.col2, hi) * b[:, None]


def _fence(p: _Px, tx: Textures) -> np.ndarray:
    kind, post, sp, bw, ht = p.par[:, 0], p.par[:, 1], p.par[:, 2], p.par[:, 3], p.par[:, 4]
    q = np.mod(p.s, sp)
    wire1 = np.mod(p.s + p.t, sp)
    wire2 = np.mod(p.s - p.t, sp)
    slat = q < bw
    link = (wire1 < bw) | (wire2 < bw)
    rail = (p.t < 0.12) | (p.t > ht - 0.12) | (np.abs(p.t - ht * 0.5) < 0.05)
    solid = np.where(kind < 0.5, slat, np.where(kind < 1.5, slat | rail, link))
    solid |= np.mod(p.s, post) < 0.12
    fill = np.clip(bw / sp, 0, 1)
    fill = np.where(kind > 1.5, np.clip(2 * fill, 0, 1), fill)
    grain = 1.0 + 0.1 * _lookup(tx.fine, p.s * 8 + p.seed * 11, p.t * 0.8) * _lod(0.2, p.fp)
    rgb = np.where(solid[:, None], p.col * grain[:, None], p.col2)
    mean = _mix(p.col2, p.col, fill)
    return _mix(mean, rgb, _lod(sp, p.fp))


def _wall(p: _Px, tx: Textures) -> np.ndarray:
    kind, bw, bh, cap, ht = p.par[:, 0], p.par[:, 1], p.par[:, 2], p.par[:, 3], p.par[:, 4]
    row = np.floor(p.t / bh)
    shift = np.where((kind > 0.5) & (np.mod(row, 2) > 0.5), bw * 0.5, 0.0)
    a = p.s + shift
    col_i = np.floor(a / bw)
    qx = a - col_i * bw
    qy = p.t - row * bh
    joint = (qx < 0.025 + 0.01 * bw) | ((kind > 0.5) & (qy < 0.02 + 0.01 * bh))
    var = 1.0 + (_hash(col_i, row, p.seed) - 0.5) * np.where(kind > 0.5, 0.22, 0.08)
    n = 1.0 + 0.1 * _lookup(tx.fine, p.s * 4 + p.seed * 7, p.t * 4) * _lod(0.25, p.fp) \
        + 0.08 * _lookup(tx.smooth, p.s * 0.5 + p.seed * 19, p.t * 0.5)
    k = _lod(np.minimum(bw, bh), p.fp)
    b = var * n * (1.0 - 0.3 * joint * k)
    b = np.where(p.t > ht - cap, 1.18 * n, b)
    return p.col * b[:, None]


def _car_side(p: _Px, tx: Textures) -> np.ndarray:
    belt, roof, ws_base, ws_run, rw_base, rw_run, bp, yb = p.par.T
    h = np.maximum(roof - belt, 0.1)
    up = np.clip((p.t - belt) / h, 0, 1)
    front = ws_base - 0.08 - up * ws_run
    rear = rw_base + 0.08 + up * rw_run
    glass = (p.t > belt + 0.05) & (p.t < roof - 0.06) & (p.s < front) & (p.s > rear) & (np.abs(p.s - bp) > 0.06)
    body_b = 0.7 + 0.4 * np.clip((p.t - yb) / np.maximum(belt - yb, 0.1), 0, 1)
    body_b = body_b + 0.25 * np.exp(-((p.t - belt + 0.12) * 12.0) ** 2)  # shoulder highlight
    gap = (np.abs(p.s - bp) < 0.015) & (p.t < belt) & (_lod(0.1, p.fp) > 0.5)
    body_b = np.where(gap, body_b * 0.5, body_b)
    rgb = p.col * body_b[:, None]
    gl = p.col2 * (0.7 + 0.5 * up)[:, None]
    return np.where(glass[:, None], gl, rgb)


def _car_end(p: _Px, tx: Textures) -> np.ndarray:
    kind, w, h = p.par[:, 0], p.par[:, 1], np.maximum(p.par[:, 2], 0.1)
    fs = p.s / np.maximum(w, 0.1)
    ft = p.t / h
    rgb = p.col * (0.85 + 0.2 * ft)[:, None]
    lamp = (ft > 0.55) & (ft < 0.88) & ((fs < 0.2) | (fs > 0.8))
    plate = (np.abs(fs - 0.5) < 0.14) & (ft > 0.18) & (ft < 0.42)
    bumper = ft < 0.2
    grille = (kind > 0.5) & (np.abs(fs - 0.5) < 0.25) & (ft > 0.45) & (ft < 0.8)
    rgb[bumper] *= 0.55
    rgb[grille] = 0.08
    lamp_rgb = np.where((kind > 0.5)[:, None], np.array([0.95, 0.93, 0.85], np.float32),
                        np.array([0.75, 0.06, 0.05], np.float32))
    rgb = np.where(lamp[:, None], lamp_rgb, rgb)
    rgb[plate] = np.array([0.88, 0.88, 0.86], np.float32)
    return rgb


def _glass(p: _Px, tx: Textures) -> np.ndarray:
    ln = np.maximum(p.par[:, 0], 0.1)
    b = 0.75 + 0.5 * np.clip(p.t / ln, 0, 1) + 0.15 * _lookup(tx.smooth, p.s * 0.7 + p.seed * 41, p.t * 0.7)
    return p.col * b[:, None]


def _wheel(p: _Px, tx: Textures) -> np.ndarray:
    c, r, kind = p.par[:, 0], np.maximum(p.par[:, 1], 0.05), p.par[:, 2]
    dx = np.abs(p.s) - c
    dy = p.t - r
    rr = np.sqrt(dx * dx + dy * dy) / r
    rim = np.where(kind > 0.5, (rr < 0.84) & (rr > 0.1), rr < 0.58)
    ang = np.arctan2(dy, dx)
    spokes = np.where(kind > 0.5, 0.75 + 0.25 * np.cos(ang * 16.0), 1.0 - 0.25 * (np.cos(ang * 5.0) > 0.3))
    rgb = np.where(rim[:, None], p.col2 * spokes[:, None], p.col)
    return rgb


def _person(p: _Px, tx: Textures) -> np.ndarray:
    hip, neck, top, shoe = p.par[:, 0], p.par[:, 1], p.par[:, 2], p.par[:, 3]
    skin = p.par[:, 4:7]
    hair = (0.06 + 0.5 * p.par[:, 7])[:, None] * np.array([1.0, 0.8, 0.6], np.float32)
    rgb = np.where((p.t > hip)[:, None], p.col, p.col2)
    rgb = rgb * (1.0 + 0.12 * _lookup(tx.smooth, p.s * 4 + p.seed * 17, p.t * 4))[:, None]
    rgb = np.where((p.t > neck)[:, None], skin, rgb)
    rgb = np.where((p.t > top - 0.07 * (top - hip))[:, None], hair, rgb)
    rgb[p.t < shoe] = 0.07
    return rgb


def _light(p: _Px, tx: Textures) -> np.ndarray:
    lit, w, h, nl = p.par[:, 0], p.par[:, 1], p.par[:, 2], p.par[:, 3]
    rgb = p.col.copy()
    lit_rgb = np.array([[1.0, 0.12, 0.08], [1.0, 0.65, 0.05], [0.2, 1.0, 0.5]], np.float32)
    off_rgb = np.array([[0.25, 0.06, 0.05], [0.25, 0.18, 0.04], [0.05, 0.22, 0.12]], np.float32)
    for i in range(3):
        ct = h * np.where(nl > 2.5, (0.82, 0.5, 0.18)[i], (0.72, 0.72, 0.28)[i])
        r2 = (p.s - w * 0.5) ** 2 + (p.t - ct) ** 2
        inside = (r2 < (0.33 * w) ** 2) & ((nl > 2.5) | (i != 1))
        on = np.abs(lit - i) < 0.5
        rgb = np.where((inside & on)[:, None], lit_rgb[i] * 1.6, np.where(inside[:, None], off_rgb[i], rgb))
    return rgb


_RED = np.array([0.75, 0.06, 0.07], np.float32)
_WHITE = np.array([0.92, 0.92, 0.9], np.float32)
_BLUE = np.array([0.05, 0.25, 0.65], np.float32)
_YELLOW = np.array([0.95, 0.75, 0.05], np.float32)
_BLACK = np.array([0.06, 0.06, 0.06], np.float32)


def _sign(p: _Px, tx: Textures) -> np.ndarray:
    kind, R = p.par[:, 0], np.maximum(p.par[:, 1], 0.05)
    s, t = p.s / R, p.t / R
    r = np.sqrt(s * s + t * t)
    c30, s30 = math.cos(math.pi / 6), 0.5
    d_up = np.minimum(np.minimum(0.5 + t, 0.5 - (c30 * s + s30 * t)), 0.5 - (-c30 * s + s30 * t))
    d_dn = np.minimum(np.minimum(0.5 - t, 0.5 - (c30 * s - s30 * t)), 0.5 - (-c30 * s - s30 * t))
    rgb = np.empty((len(s), 3), np.float32)
    k = np.rint(kind).astype(np.int32)
    sym = (np.abs(t) < 0.12) & (np.abs(s) < 0.45)
    designs = [
        np.where((r > 0.76)[:, None], _RED, np.where(sym[:, None], _BLACK, _WHITE)),  # prohibitory
        np.where(((np.abs(s) < 0.13) & (t < 0.45) & (t > -0.55))[:, None], _WHITE, _BLUE),  # mandatory
        np.where((d_up < 0.16)[:, None], _RED, np.where(((np.abs(s) < 0.07) & (np.abs(t) < 0.22))[:, None],
                                                          _BLACK, _WHITE)),  # warning
        np.where((d_dn < 0.16)[:, None], _RED, _WHITE),  # yield
        np.where(((np.abs(s) < 0.45) & (np.abs(t) < 0.45))[:, None], _WHITE, _BLUE),  # information
        np.where((np.abs(s) + np.abs(t) < 0.62)[:, None], _YELLOW, _WHITE),  # priority road
        np.where(((np.mod(t, 0.32) < 0.12) & (np.abs(s) < p.par[:, 3] / R * 0.4))[:, None],
                 p.col2, p.col),  # text panel
        np.where(((np.abs(t) < 0.16) & (np.abs(s) < 0.6))[:, None], _WHITE, _RED),  # stop
    ]
    for i, d in enumerate(designs):
        m = k == i
        rgb[m] = d[m]
    return rgb


def _bus_side(p: _Px, tx: Textures) -> np.ndarray:
    wb, wt, sp, slo, shi, ds, dw = p.par[:, 0], p.par[:, 1], p.par[:, 2], p.par[:, 3], p.par[:, 4], \
        p.par[:, 5], p.par[:, 6]
    win = (p.t > wb) & (p.t < wt) & (np.mod(p.s, sp) > 0.14)
    door = (np.abs(p.s - ds) < dw * 0.5) & (p.t < wt) & (p.t > 0.35)
    stripe = (p.t > slo) & (p.t < shi)
    rgb = p.col * (0.9 + 0.15 * np.clip(p.t / np.maximum(wt, 0.5), 0, 1))[:, None]
    rgb = np.where(stripe[:, None], p.col * 0.45 + 0.5, rgb)
    rgb[p.t < 0.45] *= 0.6
    gl = p.col2 * (0.75 + 0.4 * np.clip((p.t - wb) / np.maximum(wt - wb, 0.3), 0, 1))[:, None]
    return np.where((win | door)[:, None], gl, rgb)


def _panel(p: _Px, tx: Textures) -> np.ndarray:
    rp, slo, shi = np.maximum(p.par[:, 0], 0.05), p.par[:, 1], p.par[:, 2]
    rib = (np.mod(p.s, rp) < 0.04) & (_lod(rp, p.fp) > 0.5)
    b = 1.0 - 0.12 * rib + 0.05 * _lookup(tx.smooth, p.s * 0.5 + p.seed * 23, p.t * 0.5)
    rgb = p.col * b[:, None]
    return np.where(((p.t > slo) & (p.t < shi))[:, None], p.col2, rgb)


_MATERIALS = {FACADE: _facade, PLAIN: _plain, FOLIAGE: _foliage, FENCE: _fence, WALL: _wall,
              CAR_SIDE: _car_side, CAR_END: _car_end, GLASS: _glass, WHEEL: _wheel, PERSON: _person,
              LIGHT: _light, SIGN: _sign, BUS_SIDE: _bus_side, PANEL: _panel}


def _aa_band(dist: np.ndarray, half, fp: np.ndarray) -> np.ndarray:
    """Coverage of a band |dist| < half seen with a pixel footprint fp (anti-aliased paint)."""
    return np.clip((half - np.abs(dist)) / fp + 0.5, 0.0, 1.0) * np.sqrt(np.clip(2 * half / fp, 0.0, 1.0))


def _ground_rgb(x: np.ndarray, zw: np.ndarray, z: np.ndarray, cam: Camera, g: GroundSpec,
                tx: Textures) -> np.ndarray:
    """Colour of the ground at world (x, zw) seen at depth z (flat arrays)."""
    f = cam.focal
    fpx = z / f
    fpz = np.maximum(z * z / (f * cam.height), fpx)  # along the road a pixel spans more ground
    right = x >= 0
    d = np.where(right, x - g.edge[0], -x - g.edge[1])
    grass_end = CURB + np.where(right, g.grass[0], g.grass[1])
    sw_end = grass_end + np.where(right, g.sidewalk[0], g.sidewalk[1])
    rgb = np.empty((len(x), 3), np.float32)

    i = np.flatnonzero(d < 0.1)  # road (a little beyond the curb: colour is upsampled)
    if len(i):
        xi, zi, fx, fz = x[i], zw[i], fpx[i], fpz[i]
        n = (1.0 + g.asphalt_var * _lookup(tx.smooth, xi * 0.35, zi * 0.35)
             + 0.07 * _lookup(tx.fine, xi * 4.0, zi * 4.0) * _lod(0.25, fx))
        col = g.asphalt * n[:, None]
        paint = np.zeros(len(i))
        if g.marks:
            m = np.array(sorted(g.marks))
            j = np.searchsorted((m[1:, 0] + m[:-1, 0]) / 2, xi)
            mx, hw, dash, period = m[j].T
            paint = _aa_band(xi - mx, hw, fx)
            dashed = period > 0
            if dashed.any():
                q = np.mod(zi - mx * 7.0, np.where(dashed, period, 1.0))
                paint = np.where(dashed, paint * _aa_band(q - dash * 0.5, dash * 0.5, fz), paint)
        if g.cross_z is not None and len(g.cross_z):
            kb = np.clip(np.floor(zi / g.block).astype(np.int64) - g.cross_k0, 0, len(g.cross_z) - 1)
            cz = g.cross_z[kb]
            has = ~np.isnan(cz)
            if has.any():
                dz = np.where(has, zi - cz, -100.0)
                zebra = _aa_band(dz - 2.0, 2.0, fz) * _aa_band(np.mod(xi, 1.0) - 0.5, 0.25, fx)
                stop = _aa_band(dz + 1.6, 0.25, fz) * (xi > 0.2)
                paint = np.maximum(paint, np.maximum(zebra, stop))
        wear = 0.75 + 0.25 * _lookup(tx.fine, xi * 9.0, zi * 2.0)
        rgb[i] = _mix(col, g.mark_rgb * wear[:, None], paint.astype(np.float32))

    walk = (d >= 0.1) & ((d < CURB) | ((d >= grass_end) & (d < sw_end)))
    i = np.flatnonzero(walk)
    if len(i):
        xi, zi, fx, di = x[i], zw[i], fpx[i], d[i]
        ps = g.pave_size
        qx, qz = np.mod(xi, ps), np.mod(zi, ps * 1.5)
        joint = (np.minimum(qx, ps - qx) < 0.02 + 0.5 * fx) | (np.minimum(qz, ps * 1.5 - qz) < 0.02 + 0.5 * fx)
        k = _lod(ps, fx)
        tile = 1.0 + (_hash(np.floor(xi / ps), np.floor(zi / (ps * 1.5)), np.zeros(1)) - 0.5) * 0.16 * k
        b = tile * (1.0 - 0.22 * joint * k) * (1.0 + 0.08 * _lookup(tx.smooth, xi * 0.3 + 40, zi * 0.3))
        col = g.pave_rgb * b[:, None].astype(np.float32)
        gi = grass_end[i]
        curb = di < CURB
        bike = (di >= gi) & (di < gi + np.where(xi >= 0, g.bike[0], g.bike[1]))
        col[curb] = g.curb_rgb * b[curb, None]
        col[bike] = g.bike_rgb * (1.0 + 0.06 * _lookup(tx.fine, xi[bike] * 5, zi[bike] * 5))[:, None]
        rgb[i] = col

    i = np.flatnonzero((d >= 0.1) & ~walk)
    if len(i):
        xi, zi, fx = x[i], zw[i], fpx[i]
        n = (1.0 + 0.22 * _lookup(tx.smooth, xi * 0.6 + 90, zi * 0.6)
             + 0.25 * _lookup(tx.fine, xi * 6.0, zi * 6.0) * _lod(0.17, fx))
        dirt = np.clip((_lookup(tx.smooth, xi * 0.12 + 17, zi * 0.12) - 0.6 + g.dirt_amount) * 3.0, 0, 1)
        rgb[i] = _mix(g.grass_rgb, g.dirt_rgb, dirt) * n[:, None]
    return rgb


def _ground_grid(cam: Camera, us: np.ndarray, vs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, world z and depth of the ground at pixel columns us and rows vs (rows below the horizon)."""
    R = cam.rotation()
    z = cam.ground_depth(vs)[:, None]
    xn = ((us - cam.cx) / cam.focal)[None, :]
    yn = ((vs - cam.cy) / cam.focal)[:, None]
    x = cam.x + z * (xn * R[0, 0] + yn * R[1, 0] + R[2, 0])
    zw = cam.z + z * (xn * R[0, 2] + yn * R[1, 2] + R[2, 2])
    return x, zw, np.broadcast_to(z, x.shape)


def _ground_x(cam: Camera, W: int, vs: np.ndarray) -> np.ndarray:
    """World x of the ground at every column of rows vs, float32 (affine in u along each row)."""
    R = cam.rotation()
    z = cam.ground_depth(vs)
    yn = (vs - cam.cy) / cam.focal
    a = (cam.x + z * (yn * R[1, 0] + R[2, 0] - cam.cx / cam.focal * R[0, 0])).astype(np.float32)
    b = (z * R[0, 0] / cam.focal).astype(np.float32)
    return a[:, None] + b[:, None] * np.arange(W, dtype=np.float32)[None, :]


def ground_labels(x: np.ndarray, g: GroundSpec) -> np.ndarray:
    """Road / sidewalk (curb included) / terrain from the lateral world position."""
    right = x >= 0
    d = np.where(right, x - np.float32(g.edge[0]), -x - np.float32(g.edge[1]))
    grass_end = np.where(right, np.float32(CURB + g.grass[0]), np.float32(CURB + g.grass[1]))
    sw_end = grass_end + np.where(right, np.float32(g.sidewalk[0]), np.float32(g.sidewalk[1]))
    lab = np.where(d < 0, ROAD, TERRAIN).astype(np.uint8)
    lab[(d >= 0) & ((d < CURB) | ((d >= grass_end) & (d < sw_end)))] = SIDEWALK
    return lab


def _sky(cam: Camera, lk: Look, tx: Textures, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Sky colour on a grid of pixel columns us and rows vs: gradient, sun glow, clouds."""
    R = cam.rotation()
    xn = ((us - cam.cx) / cam.focal)[None, :, None]
    yn = ((vs - cam.cy) / cam.focal)[:, None, None]
    d = xn * R[0] + yn * R[1] + R[2]
    d = (d / np.linalg.norm(d, axis=2, keepdims=True)).reshape(-1, 3)
    e = np.clip(d[:, 1], 0.0, 1.0)
    rgb = _mix(lk.horizon, lk.zenith, (np.clip(e * 2.2, 0, 1) ** 0.7).astype(np.float32))
    glow = np.clip(d @ lk.sun, 0, 1) ** 24 * (1 - lk.cloudiness)
    rgb += (glow[:, None] * lk.sun_rgb * 0.5).astype(np.float32)
    if lk.cloudiness > 0.02:
        ey = np.maximum(d[:, 1], 0.03)
        cu = d[:, 0] / ey * 12.0 + cam.x * 0.01
        cv = d[:, 2] / ey * 12.0 + cam.z * 0.01
        c = _lookup(tx.smooth, cu, cv) + 0.5 * _lookup(tx.fine, cu * 0.5, cv * 0.5)
        cover = np.clip((c + 1.2 * lk.cloudiness - 0.6) * 2.0, 0, 1) * np.clip(e * 8, 0, 1)
        shade = (0.8 + 0.25 * _lookup(tx.smooth, cu * 1.7 + 9, cv * 1.7))[:, None]
        rgb = _mix(rgb, lk.cloud_rgb * shade, cover.astype(np.float32))
    return rgb.reshape(len(vs), len(us), 3)


def _upsample(grid: np.ndarray, k: int, H: int, W: int) -> np.ndarray:
    """A colour grid computed at pixel centres k i + (k - 1) / 2 back to full resolution."""
    h, w = grid.shape[:2]
    return cv2.resize(grid, (w * k, h * k), interpolation=cv2.INTER_LINEAR)[:H, :W]


def face_lighting(N: np.ndarray, faces: Faces, cam: Camera, lk: Look) -> np.ndarray:
    """Per-face colour of the light: ambient plus sun on faces turned towards it."""
    two = (faces.flags & TWO_SIDED) != 0
    toward = np.einsum("ij,ij->i", N, cam.position - faces.O)
    Ns = np.where((two & (toward < 0))[:, None], -N, N)
    lam = np.clip(Ns @ lk.sun, 0.0, 1.0)
    return (lk.amb_rgb[None, :] + lam[:, None] * lk.sun_rgb[None, :]).astype(np.float32)


def shade(r: Raster, faces: Faces, cam: Camera, lk: Look, gs: GroundSpec, tx: Textures,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8, labels (H, W) uint8 and depth (H, W) float32 from a raster."""
    H, W = r.ids.shape
    ids = r.ids
    labels = np.take(np.concatenate([[SKY_LABEL, ROAD], faces.cls]).astype(np.uint8), ids)
    sky = ids == SKY_ID
    with np.errstate(divide="ignore"):
        depth = np.float32(1.0) / r.w
    depth[sky] = 0.0
    img = np.empty((H, W, 3), np.float32)  # every pixel is sky, ground or a face
    fog = np.float32(-1.0 / lk.visibility)

    # sky and ground: smooth, so shaded on coarse grids and upsampled; ground labels stay exact
    rows = np.flatnonzero(sky.any(axis=1))
    if len(rows):
        k = 4
        r1 = rows[-1] + 1
        us = np.arange(0, W, k) + (k - 1) / 2
        vs = np.arange(0, r1, k) + (k - 1) / 2
        cv2.copyTo(_upsample(_sky(cam, lk, tx, us, vs), k, r1, W), sky[:r1].view(np.uint8), img[:r1])
    ground = ids == GROUND_ID
    rows = np.flatnonzero(ground.any(axis=1))
    if len(rows):
        r0 = rows[0]
        gm = ground[r0:].view(np.uint8)
        cv2.copyTo(ground_labels(_ground_x(cam, W, np.arange(r0, H, dtype=np.float64)), gs), gm, labels[r0:])
        k = 3 if W >= 384 else 2  # the ground's colour is smooth except for its paint, which is anti-aliased
        us = np.arange(0, W, k) + (k - 1) / 2
        vs = np.maximum(np.arange(r0, H, k) + (k - 1) / 2, cam.v_horizon + 0.5)
        x, zw, z = _ground_grid(cam, us, vs)
        rgb = _ground_rgb(x.ravel(), zw.ravel(), z.ravel(), cam, gs, tx).reshape(len(vs), len(us), 3)
        rgb *= lk.amb_rgb + max(lk.sun[1], 0.0) * lk.sun_rgb
        tr = np.exp(z * fog).astype(np.float32)[:, :, None]  # haze: transmittance falls with distance
        rgb = rgb * tr + lk.haze_rgb * (1.0 - tr)
        cv2.copyTo(_upsample(rgb, k, H - r0, W), gm, img[r0:])

    # objects: per material, with face coordinates (s, t) from the plane coefficients. Pixels are sorted
    # by material once; each material gathers what it needs (small temporaries: page faults are costly)
    flat_ids = ids.ravel()
    obj = np.flatnonzero(flat_ids >= FIRST_FACE_ID).astype(np.int32)
    if len(obj):
        mat = np.take(faces.mat, flat_ids[obj] - FIRST_FACE_ID)
        order = np.argsort(mat, kind="stable").astype(np.int32)
        counts = np.bincount(mat, minlength=N_MATERIALS)
        del mat
        idx = np.take(obj, order)
        del obj, order
        coef = r.coef[:, 1:, :].reshape(-1, 6).astype(np.float32)
        table = np.concatenate([faces.col, faces.col2, faces.par, faces.seed[:, None],
                                face_lighting(r.N, faces, cam, lk)], axis=1)
        flat_depth = depth.ravel()
        flat_img = img.reshape(-1, 3)
        inv_f = np.float32(1.0 / cam.focal)
        pos = 0
        for m in np.flatnonzero(counts).tolist():
            ix = idx[pos:pos + counts[m]]
            pos += counts[m]
            fid = np.take(flat_ids, ix)
            v, u = np.divmod(ix, np.int32(W))
            u = u.astype(np.float32)
            v = v.astype(np.float32)
            z = np.take(flat_depth, ix)
            cf = np.take(coef, fid, axis=0)
            s = (cf[:, 0] * u + cf[:, 1] * v + cf[:, 2]) * z
            t = (cf[:, 3] * u + cf[:, 4] * v + cf[:, 5]) * z
            del cf, u, v
            fid -= FIRST_FACE_ID
            A = np.take(table, fid, axis=0)
            p = _Px(s, t, z, z * inv_f, A[:, 0:3], A[:, 3:6], A[:, 6:14], A[:, 14])
            rgb = _MATERIALS[m](p, tx)
            rgb *= A[:, 15:18]
            tr = np.exp(z * fog)[:, None]  # haze: transmittance falls with distance
            rgb -= lk.haze_rgb
            rgb *= tr
            rgb += lk.haze_rgb
            flat_img[ix] = rgb
    return _finish(img, lk, rng), labels, depth


def _finish(img: np.ndarray, lk: Look, rng: np.random.Generator) -> np.ndarray:
    """Camera response: exposure and tone curve (one LUT per channel), vignette, sensor noise, optics blur."""
    H, W = img.shape[:2]
    out = cv2.convertScaleAbs(img, alpha=255.0)  # saturating float -> uint8
    lut = np.arange(256, dtype=np.float32)[:, None] / 255.0 * lk.gain[None, :]
    lut = np.clip(0.5 + (np.clip(lut, 0, 1) ** lk.gamma - 0.5) * lk.contrast, 0, 1)
    out = cv2.LUT(out, np.rint(lut * 255).astype(np.uint8).reshape(1, 256, 3))
    if lk.vignette > 0:
        yy = (np.arange(H, dtype=np.float32) - H / 2) / (H / 2)
        xx = (np.arange(W, dtype=np.float32) - W / 2) / (W / 2)
        vig = (255.0 - (255.0 * lk.vignette) * (xx[None, :] ** 2 * 0.6 + yy[:, None] ** 2 * 0.4)).astype(np.uint8)
        out = cv2.multiply(out, cv2.merge([vig, vig, vig]), scale=1.0 / 255.0)
    a = int(round(lk.noise * math.sqrt(3.0)))
    if a > 0:  # uniform noise with about the requested standard deviation, same on all channels
        nz = rng.integers(-a, a + 1, (H, W), dtype=np.int16)
        pos = np.maximum(nz, 0).astype(np.uint8)
        neg = np.maximum(-nz, 0).astype(np.uint8)
        out = cv2.subtract(cv2.add(out, cv2.merge([pos, pos, pos])), cv2.merge([neg, neg, neg]))
    sigma = lk.blur * W / 512.0
    if sigma > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    return out
