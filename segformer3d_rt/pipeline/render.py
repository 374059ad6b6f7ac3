"""Render: (frame, class map, depth map) -> the annotated RGB frame that is shown or written.

Everything here works on RGB uint8 numpy arrays (cv2 drawing included: colours are passed as RGB
tuples, so nothing is ever converted to BGR). ``render_torch`` does the same pixel work on a torch
device and reuses the text drawing below (``annotate``) on the host.

Conventions shared by both back ends (kept identical so that they agree to a level or two):

* class maps are resized with *exact* nearest neighbour (half-pixel centres, like the area/linear
  resize that produced the model input), depth maps with bilinear (half-pixel centres);
* invalid depth (<= 0, NaN, inf) is black; resizing ignores invalid pixels (normalised bilinear);
* depth colour: index 255 of a colour map is NEAR (warm/bright), index 0 is FAR (cold/dark);
* pixels classified as sky are drawn in the colour map's far colour and left out of the depth range (a
  monocular network's depth for the sky means nothing, and a near-looking sky is what users notice first);
* the robust depth range is the 2nd..98th percentile of the valid pixels of the raw depth map,
  computed with integer positions so both back ends pick the same samples; over a video it is smoothed
  (:class:`SmoothedDepthRange`), since a range recomputed per frame makes the colours flicker.

The tables and constants below (views and their layouts, colour lookup tables, percentiles, the numbers of
the depth and class colouring) are the one definition of these facts; ``render_torch`` imports them and
only restates the arithmetic in torch.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from ..labels import SKY
from ..runtime.lru import LRUCache

VIEWS = ("overlay", "seg", "depth", "side-by-side", "grid")
# `run --view` also takes "attention", drawn by attention_view.py from the captured maps (not by render_frame)
ATTENTION_VIEW = "attention"
RUN_VIEWS = (*VIEWS, ATTENTION_VIEW)

# The panels a layout is made of; each starts as the frame itself and is replaced by what is drawn.
PANELS = ("frame", "seg", "overlay", "depth")
# Panels per view, row by row; both back ends compose their canvas from this table (see compose).
LAYOUTS: Mapping[str, tuple[tuple[str, ...], ...]] = MappingProxyType({
    "overlay": (("overlay",),),
    "seg": (("seg",),),
    "depth": (("depth",),),
    "side-by-side": (("overlay", "depth"),),
    "grid": (("frame", "seg"), ("depth", "overlay")),
})
CLASS_PANELS = frozenset({"seg", "overlay"})

ROBUST_PERCENTILES = (2, 98)  # integers on purpose: exact sample positions (see percentile_position)
EMPTY_DEPTH_RANGE = (0.0, 1.0)  # (near, far) of a depth map without a single valid pixel
MIN_DEPTH_SPAN = 1e-6  # far - near is at least this when depth is scaled to colour-map indices
MIN_WEIGHT = 1e-6  # the smallest validity weight a resized depth pixel is divided by
VALID_WEIGHT = 0.5  # a resized depth pixel is valid where at least this share of its weight is valid

# Class maps are uint8: ids 0..MAX_ID; ids outside that become IGNORE_ID (black, as is every id past the palette).
MAX_ID = 255
IGNORE_ID = 255
LUT_SIZE = MAX_ID + 1  # rows of every lookup table, bins of the class counts
# Depth colour-map indices: NEAR_INDEX is the near end of the robust range, FAR_INDEX the far end (and the sky).
NEAR_INDEX = LUT_SIZE - 1
FAR_INDEX = 0

MAX_LEGEND_ITEMS = 10
LEGEND_MAX_HEIGHT = 0.5  # fraction of the panel; on small frames the smallest classes are dropped
NO_DEPTH_NOTE = "no depth output"
NO_CLASSES_NOTE = "no segmentation output"

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_RGB = (255, 255, 255)

# cv2 colour maps run from cold/dark (index 0) to warm/bright (index 255), which is already the
# near = 255 orientation this module uses; they come out BGR, hence the channel flip.
_CV2_COLORMAPS = {
    "turbo": cv2.COLORMAP_TURBO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "cividis": cv2.COLORMAP_CIVIDIS,
    "jet": cv2.COLORMAP_JET,
}


def _cv2_lut(code: int) -> np.ndarray:
    ramp = np.arange(LUT_SIZE, dtype=np.uint8).reshape(1, LUT_SIZE)
    lut = np.ascontiguousarray(cv2.applyColorMap(ramp, code)[0, :, ::-1])
    lut.setflags(write=False)
    return lut


_COLORMAP_LUTS: Mapping[str, np.ndarray] = MappingProxyType({k: _cv2_lut(v) for k, v in _CV2_COLORMAPS.items()})
COLORMAPS = tuple(_COLORMAP_LUTS)


@dataclass(frozen=True)
class RenderStyle:
    palette: np.ndarray  # K x 3 uint8 RGB, one row per class
    class_names: tuple[str, ...]
    view: str = "overlay"
    alpha: float = 0.5  # weight of the class colour in the overlay blend
    legend: bool = True  # classes present in this frame, colour swatch + name
    colormap: str = "turbo"  # depth colour map; near is warm/bright, far is cold/dark
    depth_range: tuple[float, float] | None = None  # (near, far); None: per-frame robust range
    hud: bool = True
    sky_far: bool = True  # draw the class named "sky" (labels.SKY) as far, whatever its depth
    sky_class: int | None = field(default=None, init=False)  # its index, found from class_names

    def __post_init__(self) -> None:
        # Normalise what callers pass from configs/metadata (tuples of tuples, lists) once here.
        pal = np.asarray(self.palette)
        if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) == 0:
            raise ValueError(f"palette must be K x 3 RGB, got shape {pal.shape}")
        if pal.dtype != np.uint8 and (pal.min() < 0 or pal.max() > 255):
            raise ValueError("palette values must be within 0..255")
        pal = pal.astype(np.uint8)
        pal.setflags(write=False)
        object.__setattr__(self, "palette", pal)
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.view not in VIEWS:
            raise ValueError(f"unknown view '{self.view}'; choose one of {', '.join(VIEWS)}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, not {self.alpha}")
        colormap_lut(self.colormap)  # raises for unknown names
        if self.depth_range is not None:
            near, far = (float(v) for v in self.depth_range)
            if not (np.isfinite(near) and np.isfinite(far) and near < far):
                raise ValueError(f"depth_range must be (near, far) with near < far, got {self.depth_range}")
            object.__setattr__(self, "depth_range", (near, far))
        sky = self.class_names.index(SKY) if self.sky_far and SKY in self.class_names else None
        object.__setattr__(self, "sky_class", sky)


# ----------------------------------------------------------------------------- lookup tables


def colormap_lut(name: str) -> np.ndarray:
    """LUT_SIZE x 3 uint8 RGB, read-only; index NEAR_INDEX (255) is near (warm/bright), FAR_INDEX (0) far
    (cold/dark)."""
    try:
        return _COLORMAP_LUTS[name]
    except KeyError:
        raise ValueError(f"unknown colour map '{name}'; choose one of {', '.join(COLORMAPS)}") from None


def class_lut(palette: np.ndarray) -> np.ndarray:
    """LUT_SIZE x 3 uint8: palette rows for ids < K, black for every other id (IGNORE_ID included)."""
    lut = np.zeros((LUT_SIZE, 3), dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8)[:LUT_SIZE]
    lut[: len(pal)] = pal
    return lut


def _apply_lut(ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    # cv2.LUT with a 3-channel table is several times faster than fancy indexing on big frames.
    return cv2.LUT(cv2.cvtColor(ids, cv2.COLOR_GRAY2RGB), lut.reshape(1, LUT_SIZE, 3))


# ----------------------------------------------------------------------------- classes


def as_ids(classes: np.ndarray) -> np.ndarray:
    """Class map as uint8; ids outside 0..MAX_ID become IGNORE_ID (drawn black)."""
    c = np.asarray(classes)
    if c.ndim != 2:
        raise ValueError(f"class map must be h x w, got shape {c.shape}")
    if c.dtype == np.uint8:
        return c
    if c.dtype.kind not in "iub":
        raise ValueError(f"class map must hold integer ids, got {c.dtype}")
    return np.where((c < 0) | (c > MAX_ID), IGNORE_ID, c).astype(np.uint8)


def nearest_source(dst, n_src: int, n_dst: int):
    """Exact half-pixel nearest neighbour: src = floor((dst + 0.5) * n_src / n_dst), at most n_src - 1.

    ``dst``: integer output positions, a numpy array or a torch tensor (both back ends call this).
    Integer arithmetic on purpose: cv2's INTER_NEAREST_EXACT misses ties by one pixel for some
    scales, torch's "nearest-exact" does not; this matches torch.
    """
    return (((2 * dst + 1) * n_src) // (2 * n_dst)).clip(max=n_src - 1)


def nearest_indices(n_src: int, n_dst: int) -> np.ndarray:
    """The source row (or column) of each of ``n_dst`` output rows (see nearest_source)."""
    return nearest_source(np.arange(n_dst, dtype=np.int64), n_src, n_dst)


def resize_nearest(ids: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = ids.shape[:2]
    if (h, w) == tuple(hw):
        return ids
    # np.take on one uint8 channel: ~2x faster than chained fancy indexing at 1080p.
    return np.take(np.take(ids, nearest_indices(h, hw[0]), axis=0), nearest_indices(w, hw[1]), axis=1)


# (source size, output size) -> cv2.remap tables. 8: a run enlarges one or two map sizes (class map,
# depth map) to one frame size, an image folder a few more; each entry is two float32 planes of the
# output (16 MB at 1080p), so 8 caps them at ~130 MB.
_NEAREST_MAPS: LRUCache[tuple, tuple[np.ndarray, np.ndarray]] = LRUCache(8)


def _nearest_maps(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    def build() -> tuple[np.ndarray, np.ndarray]:
        ys = nearest_indices(src_hw[0], dst_hw[0]).astype(np.float32)
        xs = nearest_indices(src_hw[1], dst_hw[1]).astype(np.float32)
        map_x = np.ascontiguousarray(np.broadcast_to(xs[None, :], dst_hw))
        map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], dst_hw))
        return map_x, map_y

    return _NEAREST_MAPS.get_or_create((tuple(src_hw), tuple(dst_hw)), build)


def enlarge_nearest(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of any h x w (x C) uint8 image with exactly resize_nearest's pixel choice
    (integer maps make cv2.remap a pure gather, several times faster than np.take on 3 channels)."""
    h, w = image.shape[:2]
    if (h, w) == tuple(hw):
        return image
    map_x, map_y = _nearest_maps((h, w), (int(hw[0]), int(hw[1])))
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_NEAREST)


def colorize_classes(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """h x w ids -> h x w x 3 uint8 RGB from the palette; ids >= K (e.g. 255) are black."""
    return _apply_lut(np.ascontiguousarray(as_ids(classes)), class_lut(palette))


def class_counts(classes: np.ndarray) -> np.ndarray:
    """Pixel count per id (length LUT_SIZE); the legend orders classes by it."""
    return np.bincount(as_ids(classes).ravel(), minlength=LUT_SIZE)


def legend_classes(counts: np.ndarray, num_classes: int, max_items: int = MAX_LEGEND_ITEMS) -> list[int]:
    """Ids present (count > 0, id < K), largest area first, at most ``max_items``."""
    counts = np.asarray(counts)[:num_classes]
    present = np.flatnonzero(counts > 0)
    order = np.argsort(-counts[present], kind="stable")  # ties: lower id first
    return [int(i) for i in present[order][:max_items]]


# ----------------------------------------------------------------------------- depth


def valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def percentile_position(q: int, last):
    """Where percentile ``q`` lies in ``last + 1`` sorted samples: (index below, remainder in 1/100ths), i.e.
    q * last / 100 in integers. ``last``: an int, or a torch int64 tensor (one per frame) in ``render_torch``."""
    k = q * last
    return k // 100, k % 100


def percentile_pair(values: np.ndarray, qs: tuple[int, int] = ROBUST_PERCENTILES) -> tuple[np.float32, np.float32]:
    """Linear-interpolated percentiles (numpy's default method) of a 1-D float32 array.

    The sample positions (percentile_position) are computed in integers and the interpolation in
    float32, the same way as ``render_torch``, so both back ends get bit-identical limits.
    """
    n = values.size
    positions = [percentile_position(q, n - 1) for q in qs]
    los = [lo for lo, _ in positions]
    his = [min(lo + 1, n - 1) for lo in los]
    part = np.partition(values, sorted(set(los + his)))
    out = []
    for (_, rest), lo, hi in zip(positions, los, his):
        frac = np.float32(rest) / np.float32(100)
        a, b = part[lo], part[hi]
        out.append(np.float32(a + (b - a) * frac))
    return out[0], out[1]


def robust_depth_range(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(near, far) = the ROBUST_PERCENTILES (2nd and 98th) of the valid pixels; EMPTY_DEPTH_RANGE when none are
    valid."""
    d = np.asarray(depth, dtype=np.float32)
    v = d[valid_depth(d) if valid is None else valid]
    if v.size == 0:
        return EMPTY_DEPTH_RANGE
    near, far = percentile_pair(v)
    return float(near), float(far)


class SmoothedDepthRange:
    """Per-frame robust ranges -> a range that moves slowly: an exponential moving average in log depth
    (so near and far move in proportion). ``weight`` is the share of a new frame; 1 = per-frame ranges."""

    def __init__(self, weight: float = 0.05) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"depth range smoothing must be in (0, 1], not {weight}")
        self.weight = weight
        self._log: tuple[float, float] | None = None

    def update(self, near: float, far: float) -> tuple[float, float]:
        if not (np.isfinite(near) and np.isfinite(far) and 0 < near < far):
            return self.current() or (near, far)  # a frame without usable depth keeps the colours
        new = (float(np.log(near)), float(np.log(far)))
        if self._log is None:
            self._log = new
        else:
            w = self.weight
            self._log = (self._log[0] + w * (new[0] - self._log[0]), self._log[1] + w * (new[1] - self._log[1]))
        return self.current()  # type: ignore[return-value]

    def current(self) -> tuple[float, float] | None:
        return None if self._log is None else (float(np.exp(self._log[0])), float(np.exp(self._log[1])))


def resize_depth(depth: np.ndarray, valid: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resize that ignores invalid pixels (normalised by the resized validity mask).

    A plain bilinear resize would smear zeros/NaNs of invalid pixels into their neighbours.
    An output pixel is valid where at least VALID_WEIGHT (half) of its interpolation weight is valid.
    """
    h, w = depth.shape
    if (h, w) == tuple(hw):
        return depth, valid
    size = (hw[1], hw[0])
    if valid.all():  # common case: skip the mask (result equal to a few ulps)
        return cv2.resize(depth, size, interpolation=cv2.INTER_LINEAR), np.ones(hw, dtype=bool)
    d = cv2.resize(np.where(valid, depth, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    m = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return d / np.maximum(m, np.float32(MIN_WEIGHT)), m >= VALID_WEIGHT


def _depth_rgb(depth: np.ndarray, valid: np.ndarray, near: float, far: float, lut: np.ndarray) -> np.ndarray:
    # float32 throughout and in this exact order: render_torch does the same operations.
    near32, far32 = np.float32(near), np.float32(far)
    scale = np.float32(NEAR_INDEX) / np.maximum(far32 - near32, np.float32(MIN_DEPTH_SPAN))
    d = np.where(valid, depth, far32).astype(np.float32, copy=False)
    idx = np.clip(np.rint((far32 - d) * scale), FAR_INDEX, NEAR_INDEX).astype(np.uint8)
    rgb = _apply_lut(idx, lut)
    rgb[~valid] = 0
    return rgb


def colorize_depth(depth: np.ndarray, depth_range: tuple[float, float] | None = None,
                   colormap: str = "turbo") -> np.ndarray:
    """h x w depth (larger = farther) -> h x w x 3 uint8 RGB; near warm, invalid black.

    ``depth_range`` = (near, far) in the depth map's units; None: robust per-frame range.
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth map must be h x w, got shape {d.shape}")
    valid = valid_depth(d)
    near, far = depth_range if depth_range is not None else robust_depth_range(d, valid)
    return _depth_rgb(d, valid, near, far, colormap_lut(colormap))


def sky_at(classes: np.ndarray | None, shape: tuple[int, int], sky_class: int | None) -> np.ndarray | None:
    """Where the class map says sky, at ``shape`` (the depth map's), or None when there is nothing to mask."""
    if classes is None or sky_class is None:
        return None
    mask = resize_nearest(as_ids(classes), shape) == sky_class
    return mask if mask.any() else None


def frame_depth_range(depth: np.ndarray, classes: np.ndarray | None, style: "RenderStyle") -> tuple[float, float]:
    """The per-frame robust range as the depth panel computes it (sky left out)."""
    d = np.asarray(depth, dtype=np.float32)
    valid = valid_depth(d)
    sky = sky_at(classes, d.shape, getattr(style, "sky_class", None))
    return robust_depth_range(d, valid if sky is None else valid & ~sky)


def depth_panel(depth: np.ndarray, hw: tuple[int, int], depth_range: tuple[float, float] | None,
                colormap: str, sky: np.ndarray | None = None) -> np.ndarray:
    """Colour depth at frame size: the robust range comes from the raw (small) map, then resize.
    ``sky``: a mask at the depth map's size, drawn in the far colour and left out of the range."""
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth map must be h x w, got shape {d.shape}")
    valid = valid_depth(d)
    if sky is not None:
        valid &= ~sky
    near, far = depth_range if depth_range is not None else robust_depth_range(d, valid)
    d, valid = resize_depth(d, valid, hw)
    lut = colormap_lut(colormap)
    rgb = _depth_rgb(d, valid, near, far, lut)
    if sky is not None:
        rgb[resize_nearest(sky.view(np.uint8), hw).view(bool)] = lut[FAR_INDEX]
    return rgb


# ----------------------------------------------------------------------------- layout


def view_layout(view: str) -> tuple[tuple[str, ...], ...]:
    try:
        return LAYOUTS[view]
    except KeyError:
        raise ValueError(f"unknown view '{view}'; choose one of {', '.join(VIEWS)}") from None


def layout_panels(layout: tuple[tuple[str, ...], ...]) -> frozenset[str]:
    """The names of the panels a layout draws."""
    return frozenset(n for row in layout for n in row)


def single_panel(layout: tuple[tuple[str, ...], ...]) -> str | None:
    """The one panel of a one-panel layout, else None."""
    return layout[0][0] if len(layout) == 1 and len(layout[0]) == 1 else None


def compose(layout: tuple[tuple[str, ...], ...], panels: Mapping[str, Any], cat: Callable[[list, int], Any]) -> Any:
    """The canvas of ``layout``: each row's panels side by side, the rows stacked. ``cat(parts, axis)`` joins a
    frame's arrays along axis 0 (rows) or 1 (columns); a one-panel layout returns its panel itself."""
    only = single_panel(layout)
    if only is not None:
        return panels[only]
    return cat([cat([panels[n] for n in row], 1) for row in layout], 0)


def validate_view(view: str, has_classes: bool = True, has_depth: bool = True) -> None:
    """Raise ValueError when a view cannot be drawn at all from what the model outputs.

    Composite views still work: a missing panel is drawn as the frame with a note.
    """
    only = single_panel(view_layout(view))
    if only == "depth" and not has_depth:
        raise ValueError(f"view '{view}' needs a depth output; this checkpoint has none")
    if only in CLASS_PANELS and not has_classes:
        raise ValueError(f"view '{view}' needs a segmentation output")


def blend(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * image + alpha * color, rounded to nearest."""
    return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)


# ----------------------------------------------------------------------------- text


def text_scale(panel_hw: tuple[int, int]) -> float:
    """cv2 font scale for a panel: ~16 px text on 720p, proportional to size, floored for tiny frames."""
    return float(np.clip(min(panel_hw) / 1000.0, 0.35, 3.0))


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.5)))


def _shade(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, opacity: float = 0.6) -> None:
    """Darken a box in place (translucent background for text)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 > x0 and y1 > y0:
        region = img[y0:y1, x0:x1]
        region[...] = (region * (1.0 - opacity)).astype(np.uint8)


def _metrics(scale: float) -> tuple[int, int, int, int]:
    """(stroke thickness, capital height, padding, row pitch) in pixels for a font scale."""
    th = _thickness(scale)
    cap = cv2.getTextSize("Hg", _FONT, scale, th)[0][1]
    return th, cap, max(2, cap // 2), int(round(cap * 1.8))


def _box_size(lines: Sequence[str], scale: float, swatches: bool) -> tuple[int, int, int]:
    """(width, height, row pitch) of the box that _text_box draws."""
    th, cap, pad, row = _metrics(scale)
    sw = (cap + cap // 3 + pad) if swatches else 0
    width = pad + sw + max(cv2.getTextSize(s, _FONT, scale, th)[0][0] for s in lines) + pad
    return width, pad + row * len(lines) + pad - (row - cap) // 2, row


def _text_box(img: np.ndarray, lines: Sequence[str], x0: int, y0: int, scale: float,
              swatches: Sequence[np.ndarray] | None = None) -> None:
    """Shaded box at (x0, y0) with one text line per row, optionally a colour swatch before each."""
    th, cap, pad, row = _metrics(scale)
    bw, bh, _ = _box_size(lines, scale, swatches is not None)
    _shade(img, x0, y0, x0 + bw, y0 + bh)
    sw = cap + cap // 3 if swatches is not None else 0
    text_x = x0 + pad + (sw + pad if swatches is not None else 0)
    for i, text in enumerate(lines):
        top = y0 + pad + i * row
        if swatches is not None:
            # Palette rows are RGB and so is the canvas: pass them through unchanged.
            c = tuple(int(v) for v in swatches[i])
            cv2.rectangle(img, (x0 + pad, top), (x0 + pad + sw - 1, top + cap), c, -1)
            cv2.rectangle(img, (x0 + pad, top), (x0 + pad + sw - 1, top + cap), (200, 200, 200), 1)
        cv2.putText(img, text, (text_x, top + cap), _FONT, scale, _TEXT_RGB, th, cv2.LINE_AA)


def class_name(style: RenderStyle, class_id: int) -> str:
    return style.class_names[class_id] if class_id < len(style.class_names) else f"class {class_id}"


def draw_legend(img: np.ndarray, classes_present: Sequence[int], style: RenderStyle,
                corner: str = "bottom-right", scale: float | None = None) -> np.ndarray:
    """Draw swatch + name for the given class ids (in that order) into a corner of ``img``, in place.

    Ids >= K are skipped, at most MAX_LEGEND_ITEMS are drawn, and rows beyond LEGEND_MAX_HEIGHT
    of the panel are dropped (the smallest classes, since callers order by area).
    """
    k = len(style.palette)
    ids = [int(c) for c in classes_present if 0 <= int(c) < k][:MAX_LEGEND_ITEMS]
    if not ids:
        return img
    h, w = img.shape[:2]
    scale = text_scale((h, w)) if scale is None else scale
    names = [class_name(style, c) for c in ids]
    bw, bh, row = _box_size(names, scale, swatches=True)
    margin = max(2, row // 3)
    while ids and bh + 2 * margin > h * LEGEND_MAX_HEIGHT:
        ids, names = ids[:-1], names[:-1]
        bh -= row
    if not ids:
        return img
    bw, bh, _ = _box_size(names, scale, swatches=True)
    x0 = w - margin - bw if corner.endswith("right") else margin
    y0 = h - margin - bh if corner.startswith("bottom") else margin
    _text_box(img, names, max(0, x0), y0, scale, swatches=[style.palette[c] for c in ids])
    return img


def draw_hud(img: np.ndarray, lines: Sequence[str], scale: float | None = None) -> np.ndarray:
    """Text lines top-left on a dark translucent box, in place; no lines, no box."""
    lines = [s for s in lines if s]
    if not lines:
        return img
    scale = text_scale(img.shape[:2]) if scale is None else scale
    _, _, row = _box_size(lines, scale, swatches=False)
    margin = max(2, row // 3)
    _text_box(img, lines, margin, margin, scale)
    return img


def draw_note(img: np.ndarray, text: str, scale: float | None = None) -> np.ndarray:
    """A centred one-line note (e.g. a panel the checkpoint cannot produce), in place."""
    h, w = img.shape[:2]
    scale = text_scale((h, w)) if scale is None else scale
    bw, bh, _ = _box_size([text], scale, swatches=False)
    _text_box(img, [text], max(0, (w - bw) // 2), max(0, (h - bh) // 2), scale)
    return img


def annotate(canvas: np.ndarray, style: RenderStyle, panel_hw: tuple[int, int], *,
             counts: np.ndarray | None = None, hud_lines: Sequence[str] = (),
             has_classes: bool = True, has_depth: bool = True) -> np.ndarray:
    """All host-side text of a composed canvas, in place: missing-panel notes, legend, HUD.

    The legend goes on the last class panel of the layout (the bottom-right overlay in the grid),
    in its outer bottom corner; the HUD top-left of the canvas. Text scales with the panel size,
    not the canvas, so composite views use the same text size as single ones.
    """
    layout = view_layout(style.view)
    h, w = panel_hw
    scale = text_scale(panel_hw)
    legend_at = None
    for r, row in enumerate(layout):
        for c, name in enumerate(row):
            panel = canvas[r * h:(r + 1) * h, c * w:(c + 1) * w]
            if name == "depth" and not has_depth:
                draw_note(panel, NO_DEPTH_NOTE, scale)
            elif name in CLASS_PANELS:
                if has_classes:
                    corner = "bottom-right" if c == len(row) - 1 else "bottom-left"
                    legend_at = (panel, corner)
                else:
                    draw_note(panel, NO_CLASSES_NOTE, scale)
    if style.legend and legend_at is not None and counts is not None:
        draw_legend(legend_at[0], legend_classes(counts, len(style.palette)), style, legend_at[1], scale)
    if style.hud:
        draw_hud(canvas, hud_lines, scale)
    return canvas


# ----------------------------------------------------------------------------- frame


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got {img.shape} {img.dtype}")
    return np.ascontiguousarray(img)


def render_frame(image: np.ndarray, classes: np.ndarray | None, depth: np.ndarray | None,
                 style: RenderStyle, hud_lines: Sequence[str] = (),
                 depth_range: tuple[float, float] | None = None) -> np.ndarray:
    """The annotated RGB frame for ``style.view`` (see LAYOUTS); a new array, ``image`` is untouched.

    ``classes`` (uint8 ids) and ``depth`` may be at any resolution; they are resized to the frame.
    ``depth_range`` (e.g. a smoothed one) replaces the style's for this frame.
    """
    img = _check_image(image)
    hw = img.shape[:2]
    validate_view(style.view, has_classes=classes is not None, has_depth=depth is not None)
    layout = view_layout(style.view)
    names = layout_panels(layout)

    panels: dict[str, np.ndarray] = dict.fromkeys(PANELS, img)
    ids = None
    if classes is not None and names & CLASS_PANELS:
        ids = as_ids(classes)
        # colour at the class map's own (small) size, then enlarge: same pixels, a fraction of the work
        seg = enlarge_nearest(colorize_classes(ids, style.palette), hw)
        panels["seg"] = seg
        if "overlay" in names:
            panels["overlay"] = blend(img, seg, style.alpha)
    if depth is not None and "depth" in names:
        sky = sky_at(classes, np.asarray(depth).shape, style.sky_class)
        panels["depth"] = depth_panel(depth, hw, depth_range or style.depth_range, style.colormap, sky)

    canvas = compose(layout, panels, lambda parts, axis: np.concatenate(parts, axis=axis))
    canvas = canvas.copy() if canvas is img else canvas  # never draw on the caller's frame
    counts = class_counts(ids) if ids is not None and style.legend else None
    return annotate(canvas, style, hw, counts=counts, hud_lines=hud_lines,
                    has_classes=classes is not None, has_depth=depth is not None)
