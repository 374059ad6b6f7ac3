"""Geometry core of the synthetic world: pinhole camera, planar faces and a z-buffered polygon rasteriser.

World frame: X to the right of the road, Y up, Z along the road; the ground is the plane Y = 0.
Camera frame: x right, y down, z forward (the optical axis), pixel centres at integer (u, v).
Every drawn thing is a planar face, so its inverse depth is affine in (u, v): the rasteriser fills a
polygon with OpenCV and keeps, per pixel, the nearest face id and its exact inverse depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain

import cv2
import numpy as np

NEAR = 0.25  # metres: faces are clipped to this plane in front of the camera
_SHIFT = 4  # fillPoly sub-pixel bits: smooth motion of slow edges
_ONE = 1 << _SHIFT
_SMALL = 16.0  # faces whose projection fits in this many pixels are drawn painter's style
GROUND_MIN_W = 1e-4  # inverse depth below which the ground counts as horizon/sky (> 10 km)

# face flags
BILLBOARD = 1  # turned about the vertical axis to face the camera every frame
TWO_SIDED = 2  # never back-face culled

_ZEROS = (0.0,) * 8

SKY_ID = 0
GROUND_ID = 1
FIRST_FACE_ID = 2


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over the flat ground; zero roll. Angles in radians, pitch > 0 looks down."""

    x: float  # world position across the road, metres
    z: float  # world position along the road, metres
    height: float  # metres above the ground
    yaw: float  # > 0 turns right
    pitch: float
    focal: float  # pixels (square pixels)
    cx: float  # principal point, pixels (pixel centres are integers)
    cy: float
    image_height: int
    image_width: int

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.height, self.z])

    def rotation(self) -> np.ndarray:
        """Rows are the camera's right, down and forward axes in world coordinates (camera <- world)."""
        cyw, syw = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        return np.array([[cyw, 0.0, -syw],
                         [-syw * sp, -cp, -cyw * sp],
                         [syw * cp, -sp, cyw * cp]])

    @property
    def v_horizon(self) -> float:
        """Image row of the horizon (the vanishing line of the ground plane)."""
        return self.cy - self.focal * math.tan(self.pitch)

    def ground_depth(self, v: np.ndarray | float) -> np.ndarray:
        """z-depth of the ground seen at image row(s) v (rows below the horizon): h f / (cos(pitch) (v - v_h))."""
        return self.height * self.focal / (math.cos(self.pitch) * (np.asarray(v, np.float64) - self.v_horizon))

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> (N, 3) array of (u, v, z-depth)."""
        pc = (np.asarray(points, np.float64) - self.position) @ self.rotation().T
        z = pc[:, 2]
        return np.stack([self.cx + self.focal * pc[:, 0] / z, self.cy + self.focal * pc[:, 1] / z, z], axis=1)


@dataclass
class Faces:
    """Planar faces as arrays. A face is the frame (origin O, in-plane axes U and V, normal N) plus
    polygon contours in face coordinates (s, t) metres: the world point is O + s U + t V."""

    O: np.ndarray  # (n, 3) float64
    U: np.ndarray
    V: np.ndarray
    N: np.ndarray  # outward normal (back-face culling, lighting)
    cls: np.ndarray  # (n,) uint8 train id
    mat: np.ndarray  # (n,) uint8 material (see shade)
    flags: np.ndarray  # (n,) uint8
    col: np.ndarray  # (n, 3) float32 base colour
    col2: np.ndarray  # (n, 3) float32 secondary colour
    par: np.ndarray  # (n, 8) float32 material parameters
    seed: np.ndarray  # (n,) float32 in [0, 1): per-face texture variation
    bb_off: np.ndarray  # (n,) float64: billboards are pushed this far towards the camera
    ctr: np.ndarray  # (n, 2) centre of the contours' bounding circle in (s, t)
    rad: np.ndarray  # (n,) its radius
    verts: np.ndarray  # (m, 2) contour vertices in (s, t)
    vface: np.ndarray  # (m,) face index of each vertex
    cstart: np.ndarray  # (c + 1,) first vertex of each contour
    fcon: np.ndarray  # (n + 1,) first contour of each face

    def __len__(self) -> int:
        return len(self.O)

    def shifted(self, dz: float) -> Faces:
        """The same faces moved by dz along the road (moving traffic, the camera-locked backdrop)."""
        if dz == 0.0:
            return self
        O = self.O.copy()
        O[:, 2] += dz
        return Faces(O, self.U, self.V, self.N, self.cls, self.mat, self.flags, self.col, self.col2, self.par,
                     self.seed, self.bb_off, self.ctr, self.rad, self.verts, self.vface, self.cstart, self.fcon)

    @staticmethod
    def concat(parts: list[Faces]) -> Faces:
        parts = [p for p in parts if len(p)]
        if not parts:
            return FaceBuilder().build()
        if len(parts) == 1:
            return parts[0]
        nf = np.cumsum([0] + [len(p) for p in parts])
        nv = np.cumsum([0] + [len(p.verts) for p in parts])
        nc = np.cumsum([0] + [len(p.cstart) - 1 for p in parts])
        cat = np.concatenate
        return Faces(
            cat([p.O for p in parts]), cat([p.U for p in parts]), cat([p.V for p in parts]),
            cat([p.N for p in parts]), cat([p.cls for p in parts]), cat([p.mat for p in parts]),
            cat([p.flags for p in parts]), cat([p.col for p in parts]), cat([p.col2 for p in parts]),
            cat([p.par for p in parts]), cat([p.seed for p in parts]), cat([p.bb_off for p in parts]),
            cat([p.ctr for p in parts]), cat([p.rad for p in parts]), cat([p.verts for p in parts]),
            cat([p.vface + nf[i] for i, p in enumerate(parts)]),
            cat([parts[0].cstart[:1]] + [p.cstart[1:] + nv[i] for i, p in enumerate(parts)]),
            cat([parts[0].fcon[:1]] + [p.fcon[1:] + nc[i] for i, p in enumerate(parts)]),
        )


class FaceBuilder:
    """Collects faces one by one (scene generation), then packs them into a `Faces`.

    Faces that can never be seen are dropped on arrival: the camera always looks along +z (yaw < 5 deg,
    half field of view < 40 deg), so a one-sided face turned towards +z (normal z > 0.7) could face it only
    from more than 45 deg off its axis, and faces turned sideways away from the camera's lateral range
    `cam_x` are back faces for every frame."""

    def __init__(self, cam_x: tuple[float, float] = (-1e9, 1e9),
                 view: tuple[float, float, float, float] | None = None) -> None:
        self.cam_x = cam_x
        self.view = view  # (camera x, camera z, tan of the half field of view, far): one frame only
        self.dz = 0.0  # added to the z of every face added from now on (moving streams)
        self._geo: list[float] = []  # O, U, V, N of every face, flat (packing flat lists is fast)
        self._par: list[float] = []  # 8 material parameters per face, flat
        self._attr: list[tuple] = []
        self._dz: list[float] = []
        self._verts: list[float] = []  # contour vertices, flat s, t pairs
        self._lens: list = []

    def __len__(self) -> int:
        return len(self._attr)

    def sees(self, x: float, z: float, r: float) -> bool:
        """False when an object within radius r of (x, z) cannot be in view (only for a one-frame builder)."""
        if self.view is None:
            return True
        cx, cz, tn, far = self.view
        d = z + self.dz - cz
        return -r < d < far + r and abs(x - cx) - r < (d + r) * tn

    def add(self, O, U, V, N, contours, cls: int, mat: int, col, col2=(0.0, 0.0, 0.0),
            par=(), seed: float = 0.0, flags: int = 0, bb_off: float = 0.0) -> None:
        """O, U, V, N: 3-sequences; contours: list of vertex sequences ((s, t) pairs), or a tuple
        (vertex array (m, 2), contour lengths) for many at once."""
        if not flags & TWO_SIDED:
            nx, nz = N[0], N[2]
            if nz > 0.7 or (nx > 0.99 and O[0] > self.cam_x[1]) or (nx < -0.99 and O[0] < self.cam_x[0]):
                return
        self._geo.extend(O)
        self._geo.extend(U)
        self._geo.extend(V)
        self._geo.extend(N)
        self._par.extend(par)
        if len(par) < 8:
            self._par.extend(_ZEROS[len(par):])
        self._attr.append((cls, mat, flags, col, col2, seed, bb_off))
        self._dz.append(self.dz)
        if isinstance(contours, tuple):
            self._verts.extend(contours[0].ravel().tolist())
            self._lens.append(contours[1])
        else:
            for c in contours:
                self._verts.extend(c.ravel().tolist() if isinstance(c, np.ndarray) else chain.from_iterable(c))
            self._lens.append(tuple(len(c) for c in contours))

    def build(self) -> Faces:
        n = len(self._attr)
        if n == 0:
            z3 = np.zeros((0, 3))
            return Faces(z3, z3, z3, z3, np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.uint8),
                         z3.astype(np.float32), z3.astype(np.float32), np.zeros((0, 8), np.float32),
                         np.zeros(0, np.float32), np.zeros(0), np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)),
                         np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64))
        geo = np.array(self._geo, np.float64).reshape(n, 4, 3)
        O = geo[:, 0].copy()
        O[:, 2] += self._dz
        cls, mat, flags, col, col2, seed, bb = zip(*self._attr)
        pars = np.array(self._par, np.float32).reshape(n, 8)
        ncon = np.fromiter((len(x) for x in self._lens), np.int64, n)
        lens = np.fromiter((v for x in self._lens for v in x), np.int64, int(ncon.sum()))
        verts = np.array(self._verts, np.float64).reshape(-1, 2)
        fcon = np.concatenate([[0], np.cumsum(ncon)])
        cstart = np.concatenate([[0], np.cumsum(lens)])
        fv = cstart[fcon]  # first vertex of each face
        vface = np.repeat(np.arange(n), np.diff(fv))
        lo = np.minimum.reduceat(verts, fv[:-1], axis=0)
        hi = np.maximum.reduceat(verts, fv[:-1], axis=0)
        return Faces(O, geo[:, 1].copy(), geo[:, 2].copy(), geo[:, 3].copy(), np.array(cls, np.uint8), np.array(mat, np.uint8),
                     np.array(flags, np.uint8), np.array(col, np.float32), np.array(col2, np.float32), pars,
                     np.array(seed, np.float32), np.array(bb, np.float64), (lo + hi) / 2,
                     np.linalg.norm(hi - lo, axis=1) / 2, verts, vface, cstart, fcon)


@dataclass
class Raster:
    """Result of rasterising: per pixel the nearest face id and its inverse depth (0 = nothing)."""

    ids: np.ndarray  # (H, W) int32: 0 sky, 1 ground, 2 + k face k
    w: np.ndarray  # (H, W) float32 inverse z-depth
    coef: np.ndarray  # (n + 2, 3, 3) per id: rows w, s*w and t*w as affine functions (a, b, c) of (u, v)
    N: np.ndarray  # (n, 3) face normals as drawn this frame (billboards turned)


def _clip_near(pc: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-space polygon (k, 3) to z >= NEAR."""
    out = []
    k = len(pc)
    for i in range(k):
        a, b = pc[i], pc[(i + 1) % k]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            r = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + r * (b - a))
    return np.asarray(out).reshape(-1, 3)


def _plane_coefs(Nr: np.ndarray, dist: np.ndarray, f: float, cx: float, cy: float) -> np.ndarray:
    """Affine (a, b, c) in (u, v) of n_cam . (xn, yn, 1) / dist, with xn = (u - cx) / f, yn = (v - cy) / f."""
    a = Nr[:, 0] / f
    b = Nr[:, 1] / f
    c = Nr[:, 2] - a * cx - b * cy
    return np.stack([a, b, c], axis=1) / dist[:, None]


def rasterize(faces: Faces, cam: Camera, far: float) -> Raster:
    """Ground plane plus all faces, z-buffered. Faces farther than `far` (+ their size) are skipped."""
    H, W = cam.image_height, cam.image_width
    f, cx, cy = cam.focal, cam.cx, cam.cy
    R = cam.rotation()
    C = cam.position
    n = len(faces)

    # ground: inverse depth depends on the row only (zero roll)
    rows = np.arange(H, dtype=np.float64)
    wg = (math.cos(cam.pitch) * (rows - cy) / f + math.sin(cam.pitch)) / cam.height
    ground = wg > GROUND_MIN_W
    zb = np.repeat(np.where(ground, wg, 0.0).astype(np.float32)[:, None], W, axis=1)
    ids = np.repeat(np.where(ground, GROUND_ID, SKY_ID).astype(np.int32)[:, None], W, axis=1)

    coef = np.zeros((n + 2, 3, 3))
    g_nr = R @ np.array([0.0, 1.0, 0.0])
    coef[GROUND_ID, 0] = _plane_coefs(g_nr[None], np.array([-cam.height]), f, cx, cy)[0]
    # ground texture coordinates are world x and z: s = x, t = z
    for row, axis in ((1, 0), (2, 2)):
        e = np.zeros(3)
        e[axis] = 1.0
        er = R @ e
        coef[GROUND_ID, row] = C[axis] * coef[GROUND_ID, 0] + np.array(
            [er[0] / f, er[1] / f, er[2] - er[0] * cx / f - er[1] * cy / f])
    if n == 0:
        return Raster(ids, zb, coef, np.zeros((0, 3)))

    O, U, V, N = faces.O, faces.U, faces.V, faces.N
    bb = (faces.flags & BILLBOARD) != 0
    if bb.any():
        O, U, N = O.copy(), U.copy(), N.copy()
        d = C - O[bb]
        d[:, 1] = 0.0
        d /= np.maximum(np.linalg.norm(d, axis=1), 1e-6)[:, None]
        N[bb] = d
        U[bb] = np.stack([-d[:, 2], np.zeros(len(d)), d[:, 0]], axis=1)
        O[bb] += d * faces.bb_off[bb, None]

    # visibility: facing the camera and a bounding sphere inside the view frustum
    cen = O + faces.ctr[:, :1] * U + faces.ctr[:, 1:] * V
    cc = (cen - C) @ R.T
    rad = faces.rad
    tx = max(cx + 0.5, W - 0.5 - cx) / f
    ty = max(cy + 0.5, H - 0.5 - cy) / f
    facing = ((faces.flags & TWO_SIDED) != 0) | (np.einsum("ij,ij->i", N, C - O) > 1e-9)
    vis = (facing & (cc[:, 2] > NEAR - rad) & (cc[:, 2] < far + rad)
           & (np.abs(cc[:, 0]) < cc[:, 2] * tx + rad * (1.0 + tx))
           & (np.abs(cc[:, 1]) < cc[:, 2] * ty + rad * (1.0 + ty)))
    # inverse depth and texture coordinates as affine functions of (u, v), for every face
    dist = np.einsum("ij,ij->i", N, O - C)
    dist = np.where(np.abs(dist) < 1e-9, 1e-9, dist)  # edge-on planes draw nothing useful
    wco = _plane_coefs(N @ R.T, dist, f, cx, cy)
    coef[2:, 0] = wco
    for row, A in ((1, U), (2, V)):
        Ar = A @ R.T
        coef[2:, row] = np.einsum("ij,ij->i", A, C - O)[:, None] * wco + np.stack(
            [Ar[:, 0] / f, Ar[:, 1] / f, Ar[:, 2] - Ar[:, 0] * cx / f - Ar[:, 1] * cy / f], axis=1)

    vis_idx = np.flatnonzero(vis)
    if len(vis_idx) == 0:
        return Raster(ids, zb, coef, N)
    # contour vertices of the visible faces, in camera space
    fv = faces.cstart[faces.fcon]  # first vertex of each face (n + 1)
    counts = fv[vis_idx + 1] - fv[vis_idx]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    vsel = np.repeat(fv[vis_idx] - starts, counts) + np.arange(counts.sum())
    vf = faces.vface[vsel]
    st = faces.verts[vsel]
    pw = O[vf] + st[:, :1] * U[vf] + st[:, 1:] * V[vf]
    pc = (pw - C) @ R.T
    z = pc[:, 2]
    zs = np.maximum(z, NEAR)
    px = cx + f * pc[:, 0] / zs
    py = cy + f * pc[:, 1] / zs
    zmin = np.minimum.reduceat(z, starts)
    xmin = np.minimum.reduceat(px, starts)
    xmax = np.maximum.reduceat(px, starts)
    ymin = np.minimum.reduceat(py, starts)
    ymax = np.maximum.reduceat(py, starts)
    wv = 1.0 / zs
    wmin = np.minimum.reduceat(wv, starts)
    wmax = np.maximum.reduceat(wv, starts)
    lim = float(1 << 26)
    q = np.stack([np.clip(px * _ONE, -lim, lim), np.clip(py * _ONE, -lim, lim)], axis=1)
    q = np.rint(q).astype(np.int32)
    cstart = faces.cstart
    fcon = faces.fcon

    def contours(j: int, k: int) -> list[np.ndarray]:
        """Projected contours (fixed point) of visible face j (= face k)."""
        offs = cstart[fcon[k]:fcon[k + 1] + 1] - cstart[fcon[k]] + starts[j]
        return [q[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]

    onscreen = (xmax >= -0.5) & (xmin <= W - 0.5) & (ymax >= -0.5) & (ymin <= H - 0.5)
    small = onscreen & (zmin >= NEAR) & (xmax - xmin <= _SMALL) & (ymax - ymin <= _SMALL)
    # tiny faces: painter's order (far to near) straight into the id buffer; their exact inverse depth
    # is filled in afterwards from the plane equations, then bigger faces are z-tested against it
    js = np.flatnonzero(small)
    if len(js):
        js = js[np.argsort(-cc[vis_idx[js], 2], kind="stable")]
        for j in js.tolist():
            k = int(vis_idx[j])
            cv2.fillPoly(ids, contours(j, k), FIRST_FACE_ID + k, cv2.LINE_8, _SHIFT)
        hit = np.flatnonzero(ids.ravel() >= FIRST_FACE_ID)
        if len(hit):
            kk = ids.ravel()[hit] - FIRST_FACE_ID
            vv, uu = np.divmod(hit, W)
            c3 = wco[kk]
            wl = np.empty(n)
            wh = np.empty(n)
            wl[vis_idx], wh[vis_idx] = wmin, wmax
            wpx = np.minimum(np.maximum(c3[:, 0] * uu + c3[:, 1] * vv + c3[:, 2], wl[kk]), wh[kk])
            # no z-test was made against the ground: where it is nearer (a face's edge pixel below its
            # base line), the ground stays
            wgr = np.where(ground, wg, 0.0)[vv]
            under = wgr > wpx
            ids.ravel()[hit[under]] = GROUND_ID
            zb.ravel()[hit] = np.where(under, wgr, wpx)
    uu = np.arange(W, dtype=np.float32)
    vv = np.arange(H, dtype=np.float32)
    wco32 = wco.astype(np.float32)
    wmin32, wmax32 = wmin.astype(np.float32), wmax.astype(np.float32)
    for j in np.flatnonzero(onscreen & ~small).tolist():
        k = int(vis_idx[j])
        if zmin[j] >= NEAR:
            polys = contours(j, k)
            x_lo, x_hi, y_lo, y_hi, w_lo, w_hi = xmin[j], xmax[j], ymin[j], ymax[j], wmin32[j], wmax32[j]
        else:  # crosses the near plane: clip each contour in camera space, then project
            offs = cstart[fcon[k]:fcon[k + 1] + 1] - cstart[fcon[k]] + starts[j]
            polys, ws = [], []
            for i in range(len(offs) - 1):
                cp = _clip_near(pc[offs[i]:offs[i + 1]])
                if len(cp) >= 3:
                    pp = np.stack([cx + f * cp[:, 0] / cp[:, 2], cy + f * cp[:, 1] / cp[:, 2]], axis=1)
                    polys.append(np.rint(np.clip(pp * _ONE, -lim, lim)).astype(np.int32))
                    ws.append(1.0 / cp[:, 2])
            if not polys:
                continue
            allp = np.concatenate(polys) / _ONE
            x_lo, y_lo = allp.min(axis=0)
            x_hi, y_hi = allp.max(axis=0)
            allw = np.concatenate(ws)
            w_lo, w_hi = np.float32(allw.min()), np.float32(allw.max())
        x0 = max(int(math.floor(x_lo)), 0)
        x1 = min(int(math.ceil(x_hi)) + 1, W)
        y0 = max(int(math.floor(y_lo)), 0)
        y1 = min(int(math.ceil(y_hi)) + 1, H)
        if x0 >= x1 or y0 >= y1:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        off = (-x0 * _ONE, -y0 * _ONE)
        for p in polys:
            cv2.fillPoly(mask, [p], 1, cv2.LINE_8, _SHIFT, off)
        a, b, c = wco32[k]  # float32 like the z-buffer
        # clamp to the face's own range: pixels whose centre lies just outside a grazing face stay sane
        wpix = (a * uu[x0:x1] + c)[None, :] + (b * vv[y0:y1])[:, None]
        np.minimum(wpix, w_hi, out=wpix)
        np.maximum(wpix, w_lo, out=wpix)
        zv = zb[y0:y1, x0:x1]
        upd = wpix > zv
        upd &= mask.view(bool)
        np.copyto(zv, wpix, where=upd)
        np.copyto(ids[y0:y1, x0:x1], FIRST_FACE_ID + k, where=upd)
    return Raster(ids, zb, coef, N)
    # contour vertices of the visible faces, in camera space
    fv = faces.cstart[faces.fcon]  # first vertex of each face (n + 1)
    counts = fv[vis_idx + 1] - fv[vis_idx]
    vsel = np.repeat(fv[vis_idx] - np.cumsum(np.concatenate([[0], counts[:-1]])), counts) + np.arange(counts.sum())
    vf = faces.vface[vsel]
    st = faces.verts[vsel]
    pw = O[vf] + st[:, :1] * U[vf] + st[:, 1:] * V[vf]
    pc = (pw - C) @ R.T
    z = pc[:, 2]
    zs = np.maximum(z, NEAR)
    px = cx + f * pc[:, 0] / zs
    py = cy + f * pc[:, 1] / zs
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    zmin = np.minimum.reduceat(z, starts)
    xmin = np.minimum.reduceat(px, starts)
    xmax = np.maximum.reduceat(px, starts)
    ymin = np.minimum.reduceat(py, starts)
    ymax = np.maximum.reduceat(py, starts)
    wv = 1.0 / zs
    wmin = np.minimum.reduceat(wv, starts)
    wmax = np.maximum.reduceat(wv, starts)
    uu = np.arange(W, dtype=np.float64)
    vv = np.arange(H, dtype=np.float64)

    for j, k in enumerate(vis_idx):
        base = starts[j]
        c0, c1 = faces.fcon[k], faces.fcon[k + 1]
        offs = faces.cstart[c0:c1 + 1] - faces.cstart[c0] + base
        if zmin[j] >= NEAR:
            polys = [np.stack([px[offs[i]:offs[i + 1]], py[offs[i]:offs[i + 1]]], axis=1) for i in range(c1 - c0)]
            x_lo, x_hi, y_lo, y_hi, w_lo, w_hi = xmin[j], xmax[j], ymin[j], ymax[j], wmin32[j], wmax32[j]
        else:  # crosses the near plane: clip each contour in camera space, then project
            polys, ws = [], []
            for i in range(c1 - c0):
                q = _clip_near(pc[offs[i]:offs[i + 1]])
                if len(q) >= 3:
                    polys.append(np.stack([cx + f * q[:, 0] / q[:, 2], cy + f * q[:, 1] / q[:, 2]], axis=1))
                    ws.append(1.0 / q[:, 2])
            if not polys:
                continue
            allp = np.concatenate(polys)
            x_lo, y_lo = allp.min(axis=0)
            x_hi, y_hi = allp.max(axis=0)
            allw = np.concatenate(ws)
            w_lo, w_hi = np.float32(allw.min()), np.float32(allw.max())
        x0 = max(int(math.floor(x_lo)), 0)
        x1 = min(int(math.ceil(x_hi)) + 1, W)
        y0 = max(int(math.floor(y_lo)), 0)
        y1 = min(int(math.ceil(y_hi)) + 1, H)
        if x0 >= x1 or y0 >= y1:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        org = np.array([x0, y0], np.float64)
        for p in polys:
            q = np.clip(np.rint((p - org) * _ONE), -(1 << 26), 1 << 26).astype(np.int32)
            cv2.fillPoly(mask, [q], 1, cv2.LINE_8, _SHIFT)
        a, b, c = wco32[k]  # float32 like the z-buffer
        # clamp to the face's own range: pixels whose centre lies just outside a grazing face stay sane
        wpix = (a * uu[x0:x1] + c)[None, :] + (b * vv[y0:y1])[:, None]
        np.clip(wpix, w_lo, w_hi, out=wpix)
        zv = zb[y0:y1, x0:x1]
        upd = wpix > zv
        upd &= mask.view(bool)
        np.copyto(zv, wpix, where=upd)
        np.copyto(ids[y0:y1, x0:x1], FIRST_FACE_ID + k, where=upd)
    return Raster(ids, zb, coef, N)
