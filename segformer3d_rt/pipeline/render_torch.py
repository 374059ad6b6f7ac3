"""The render stage on a torch device: colouring, blending and depth colour mapping run on that device.

``render`` downloads the finished uint8 canvas and, when a legend is drawn, 256 class counts per frame;
legend, HUD and notes are then drawn on the host by ``render.annotate``, the same code the numpy path
uses. The host waits for the device at those downloads, at ``frame_ranges`` (which returns the ranges on
the host), where a ``depth_range`` passed per call is uploaded (a blocking copy), where the sky is painted
in the far colour (a boolean-mask assignment, which counts the mask first) and in the legend's bincount
(which sizes its output from the ids).
Every table, constant and layout comes from ``render.py``; what is here is the torch arithmetic of the
same recipe (exact nearest, normalised bilinear, integer percentile positions, float32 index maths). The
blend and the bilinear resize use other kernels than render.py's cv2 calls, so the back ends agree to a
level or two, not bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .render import (
    CLASS_PANELS,
    EMPTY_DEPTH_RANGE,
    FAR_INDEX,
    IGNORE_ID,
    LUT_SIZE,
    MAX_ID,
    MIN_DEPTH_SPAN,
    MIN_WEIGHT,
    NEAR_INDEX,
    PANELS,
    ROBUST_PERCENTILES,
    VALID_WEIGHT,
    RenderStyle,
    annotate,
    class_lut,
    colormap_lut,
    compose,
    layout_panels,
    nearest_source,
    percentile_position,
    validate_view,
    view_layout,
)


def _batched(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Add a leading batch axis when ``t`` has ``ndim`` dims (a single frame)."""
    return t.unsqueeze(0) if t.dim() == ndim else t


def nearest_indices(n_src: int, n_dst: int, device: torch.device) -> torch.Tensor:
    """render.nearest_indices on ``device`` (the formula is render.nearest_source)."""
    return nearest_source(torch.arange(n_dst, device=device, dtype=torch.long), n_src, n_dst)


def resize_nearest(ids: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """B x h x w -> B x H x W, exact half-pixel nearest (same as render.resize_nearest).

    Integer index gathers rather than F.interpolate("nearest-exact"): its float scale could pick
    the other neighbour at exact ties on some device/scale, and class ids must agree exactly.
    """
    h, w = int(ids.shape[-2]), int(ids.shape[-1])
    if (h, w) == tuple(hw):
        return ids
    iy = nearest_indices(h, hw[0], ids.device)
    ix = nearest_indices(w, hw[1], ids.device)
    return ids.index_select(-2, iy).index_select(-1, ix)


def valid_depth(depth: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(depth) & (depth > 0)


def robust_depth_range(depth: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame (near, far) as B-vectors: the ROBUST_PERCENTILES of valid pixels, EMPTY_DEPTH_RANGE if none.

    Sort-based with invalid pixels pushed to +inf, so there is no data-dependent shape (and no
    device sync), and no torch.quantile size limit. Positions are render.percentile_position's integers.
    """
    flat = torch.where(valid, depth, torch.full_like(depth, float("inf"))).flatten(1)
    s = flat.sort(dim=1).values
    n = valid.flatten(1).sum(dim=1)  # int64, B
    last = (n - 1).clamp_min(0)
    out = []
    for q in ROBUST_PERCENTILES:
        lo, rest = percentile_position(q, last)
        hi = torch.minimum(lo + 1, last)
        frac = rest.to(torch.float32) / 100.0
        a = s.gather(1, lo[:, None])[:, 0]
        b = s.gather(1, hi[:, None])[:, 0]
        out.append(a + (b - a) * frac)
    none = n == 0
    near = torch.where(none, torch.full_like(out[0], EMPTY_DEPTH_RANGE[0]), out[0])
    far = torch.where(none, torch.full_like(out[1], EMPTY_DEPTH_RANGE[1]), out[1])
    return near, far


def resize_depth(depth: torch.Tensor, valid: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resize ignoring invalid pixels (normalised by the resized validity mask), as render.resize_depth."""
    if tuple(depth.shape[-2:]) == tuple(hw):
        return depth, valid
    both = torch.stack([torch.where(valid, depth, torch.zeros_like(depth)), valid.to(depth.dtype)], dim=1)
    d, m = F.interpolate(both, size=hw, mode="bilinear", align_corners=False).unbind(1)
    return d / m.clamp_min(MIN_WEIGHT), m >= VALID_WEIGHT


def depth_rgb(depth: torch.Tensor, valid: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
              lut: torch.Tensor) -> torch.Tensor:
    """B x H x W depth -> B x H x W x 3 uint8; near/far are B-vectors (float32)."""
    near, far = near.view(-1, 1, 1), far.view(-1, 1, 1)
    scale = float(NEAR_INDEX) / (far - near).clamp_min(MIN_DEPTH_SPAN)
    d = torch.where(valid, depth, far.expand_as(depth))
    idx = torch.round((far - d) * scale).clamp_(FAR_INDEX, NEAR_INDEX).to(torch.long)
    rgb = lut[idx]
    return rgb.masked_fill_(~valid.unsqueeze(-1), 0)


def blend(image: torch.Tensor, color: torch.Tensor, alpha: float) -> torch.Tensor:
    out = image.to(torch.float32) * (1.0 - alpha) + color.to(torch.float32) * alpha
    return out.round_().clamp_(0, 255).to(torch.uint8)


def class_counts(classes: torch.Tensor) -> torch.Tensor:
    """B x LUT_SIZE pixel counts per id, one bincount for the whole batch (ids offset per frame)."""
    b = classes.shape[0]
    offs = torch.arange(b, device=classes.device).view(-1, 1) * LUT_SIZE
    flat = (classes.reshape(b, -1).to(torch.long) + offs).flatten()
    # scatter_add_ into a fixed size, not bincount: bincount reads the largest id back to size its output (a sync)
    counts = torch.zeros(b * LUT_SIZE, dtype=torch.long, device=classes.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat)).view(b, LUT_SIZE)


class TorchRenderer:
    """``render.render_frame`` for torch tensors on any device; palette and colour map uploaded once.

    ``__call__`` returns the canvas tensor without text (on the device); ``render`` downloads it
    and draws legend/HUD/notes on the host, i.e. the drop-in replacement for ``render_frame``.
    """

    def __init__(self, style: RenderStyle, device: torch.device | str = "cpu") -> None:
        self.style = style
        self.device = torch.device(device)
        self.layout = view_layout(style.view)
        self.panel_names = layout_panels(self.layout)
        self._class_lut = torch.from_numpy(class_lut(style.palette)).to(self.device)
        self._depth_lut = torch.from_numpy(colormap_lut(style.colormap).copy()).to(self.device)
        self._range = None if style.depth_range is None else (
            torch.tensor(style.depth_range, dtype=torch.float32, device=self.device))

    def _upload(self, t: torch.Tensor | np.ndarray) -> torch.Tensor:
        return torch.as_tensor(t).to(self.device, non_blocking=True)

    def _inputs(self, image: torch.Tensor | np.ndarray, classes: torch.Tensor | np.ndarray | None,
                depth: torch.Tensor | np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        img = _batched(self._upload(image), 3)
        if img.dim() != 4 or img.shape[-1] != 3 or img.dtype != torch.uint8:
            raise ValueError(f"image must be (B x) H x W x 3 uint8, got {tuple(img.shape)} {img.dtype}")
        cls = None if classes is None else _batched(self._upload(classes), 2)
        if cls is not None:
            if cls.dtype != torch.uint8:
                cls = torch.where((cls < 0) | (cls > MAX_ID), IGNORE_ID, cls).to(torch.uint8)  # as render.as_ids
            if cls.dim() != 3 or cls.shape[0] != img.shape[0]:
                raise ValueError(f"classes must be (B x) h x w matching the image batch, got {tuple(cls.shape)}")
        dep = None if depth is None else _batched(self._upload(depth), 2).to(torch.float32)
        if dep is not None and (dep.dim() != 3 or dep.shape[0] != img.shape[0]):
            raise ValueError(f"depth must be (B x) h x w matching the image batch, got {tuple(dep.shape)}")
        return img, cls, dep

    def _sky(self, cls: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor | None:
        sky_class = self.style.sky_class
        if cls is None or sky_class is None:
            return None
        return resize_nearest(cls, shape) == sky_class

    def frame_ranges(self, depth: torch.Tensor | np.ndarray,
                     classes: torch.Tensor | np.ndarray | None = None) -> list[tuple[float, float]]:
        """The per-frame robust (near, far) of a (B x) h x w depth batch, on the host (sky left out)."""
        dep = _batched(self._upload(depth), 2).to(torch.float32)
        valid = valid_depth(dep)
        cls = None if classes is None else _batched(self._upload(classes), 2)
        sky = self._sky(cls, tuple(dep.shape[-2:]))
        near, far = robust_depth_range(dep, valid if sky is None else valid & ~sky)
        return list(zip(near.tolist(), far.tolist()))

    def _depth_panel(self, depth: torch.Tensor, hw: tuple[int, int],
                     depth_range: tuple[float, float] | None = None,
                     cls: torch.Tensor | None = None) -> torch.Tensor:
        valid = valid_depth(depth)
        sky = self._sky(cls, tuple(depth.shape[-2:]))
        if sky is not None:
            valid &= ~sky
        fixed = self._range if depth_range is None else torch.tensor(depth_range, dtype=torch.float32,
                                                                     device=self.device)
        if fixed is not None:
            near, far = fixed[0].expand(depth.shape[0]), fixed[1].expand(depth.shape[0])
        else:
            near, far = robust_depth_range(depth, valid)  # from the raw map, as render.py does
        d, v = resize_depth(depth, valid, hw)
        rgb = depth_rgb(d, v, near, far, self._depth_lut)
        if sky is not None:  # the far colour, as render.depth_panel draws it
            # where(), not rgb[mask] = ...: boolean-mask assignment counts the mask's pixels on the host (a
            # device sync every frame)
            far_sky = resize_nearest(sky.to(torch.uint8), hw).bool().unsqueeze(-1)
            rgb = torch.where(far_sky, self._depth_lut[FAR_INDEX], rgb)
        return rgb

    def _canvas(self, img: torch.Tensor, cls: torch.Tensor | None, dep: torch.Tensor | None,
                depth_range: tuple[float, float] | None = None) -> torch.Tensor:
        validate_view(self.style.view, has_classes=cls is not None, has_depth=dep is not None)
        hw = (int(img.shape[1]), int(img.shape[2]))
        panels = dict.fromkeys(PANELS, img)
        if cls is not None and self.panel_names & CLASS_PANELS:
            seg = self._class_lut[resize_nearest(cls, hw).to(torch.long)]
            panels["seg"] = seg
            if "overlay" in self.panel_names:
                panels["overlay"] = blend(img, seg, self.style.alpha)
        if dep is not None and "depth" in self.panel_names:
            panels["depth"] = self._depth_panel(dep, hw, depth_range, cls)
        # A single-panel view is always a fresh tensor (validate_view rules out the bare frame); dim 0 is the batch.
        return compose(self.layout, panels, lambda parts, axis: torch.cat(parts, dim=axis + 1))

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, classes: torch.Tensor | None,
                 depth: torch.Tensor | None = None) -> torch.Tensor:
        """Canvas without text: uint8 (B x) H' x W' x 3 on ``self.device`` (batched iff image is)."""
        img, cls, dep = self._inputs(image, classes, depth)
        canvas = self._canvas(img, cls, dep)
        return canvas[0] if torch.as_tensor(image).dim() == 3 else canvas

    @torch.no_grad()
    def render(self, image: torch.Tensor, classes: torch.Tensor | None, depth: torch.Tensor | None = None,
               hud_lines: Sequence[str] = (), depth_range: tuple[float, float] | None = None) -> np.ndarray:
        """Finished frame(s) on the host: the canvas plus legend, HUD and notes (like render_frame).
        ``depth_range`` (e.g. a smoothed one) replaces the style's for these frames."""
        img, cls, dep = self._inputs(image, classes, depth)
        canvas = self._canvas(img, cls, dep, depth_range)
        counts = None
        if cls is not None and self.style.legend and self.panel_names & CLASS_PANELS:
            counts = class_counts(cls).cpu().numpy()  # 256 ints per frame, from the small map
        out = canvas.cpu().numpy()
        hw = (int(img.shape[1]), int(img.shape[2]))
        for i, frame in enumerate(out):
            annotate(frame, self.style, hw, counts=None if counts is None else counts[i], hud_lines=hud_lines,
                     has_classes=cls is not None, has_depth=dep is not None)
        return out[0] if torch.as_tensor(image).dim() == 3 else out
