"""The attention view: key-resolution maps drawn onto the frame, one panel per block (a 2x2 grid for the four
stages), each with its colour bar, its stage/block/head label and the query marked; optionally the heads' outputs
(overlay, depth; drawn by ``render.render_frame``) beside them. Host-side numpy/cv2, RGB throughout.

Every panel is frame-sized, so a click anywhere on the canvas names the source pixel ``(x mod W, y mod H)``.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import UserError
from ..model.attention import MEAN, AttentionRequest, BlockAttention, BlockRef, Head, head_map, select_blocks
from .attention_fit import FrameFit, check_query, fit_for
from .render import RenderStyle, SmoothedDepthRange, blend, colormap_lut, draw_hud, frame_depth_range, \
    render_frame, text_scale

__all__ = ["BESIDE", "AttentionRenderer", "AttentionStyle", "QueryPoint", "RunAttention", "attention_panel", "for_run",
           "frame_map"]

BESIDE = ("overlay", "depth")  # head outputs that can be shown beside the maps (--with)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)


class QueryPoint:
    """The query in source pixels (None: the attention each location receives), shared by the window, which moves
    it on a click (GUI thread), and the renderer, which reads it for every frame (render thread)."""

    def __init__(self, xy: tuple[int, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._xy = xy

    def get(self) -> tuple[int, int] | None:
        with self._lock:
            return self._xy

    def set(self, xy: tuple[int, int] | None) -> None:
        with self._lock:
            self._xy = None if xy is None else (int(xy[0]), int(xy[1]))


@dataclass(frozen=True)
class AttentionStyle:
    colormap: str = "inferno"  # low attention dark, high bright
    alpha: float = 0.6  # weight of the map's colour over the greyed frame


def _tokens(n: int, stride: int) -> int:
    """Tokens along a side of ``n`` input pixels at ``stride``: the patch embedding (stride 4) and each stage's
    (stride 2) round up; ``n / stride`` for the multiples of 32 the preprocess makes."""
    n, s = -(-n // 4), 4
    while s < stride:
        n, s = -(-n // 2), s * 2
    return n


def frame_map(att: BlockAttention, fit: FrameFit, head: Head,
              query: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(frame-sized float32 map, the key-resolution map it came from) for one block: the query's attention over
    the keys, or without a query the attention each key receives (mean over queries)."""
    expect = (_tokens(fit.input_hw[0], att.stride), _tokens(fit.input_hw[1], att.stride))
    if tuple(att.query_hw) != expect:  # the maps must come from this frame's input, or nothing lines up
        raise ValueError(f"{att.ref}: token grid {att.query_hw} does not match the {fit.input_hw} input {expect}")
    if query is None:
        maps = att.received
    else:
        maps = att.query_map(fit.token(query, att.stride, att.query_hw))
    key_map = head_map(maps, head).float().cpu().numpy()
    return fit.key_to_frame(key_map, att.key_cell), key_map


def _text_lines(img: np.ndarray, lines: Sequence[str], x: int, y: int, scale: float, anchor: str = "bottom-left",
                shade: bool = True) -> None:
    """Lines of text on a dark translucent box whose ``anchor`` corner is at (x, y), in place."""
    th = max(1, int(round(scale * 1.5)))
    sizes = [cv2.getTextSize(s, _FONT, scale, th)[0] for s in lines]
    cap = cv2.getTextSize("Hg", _FONT, scale, th)[0][1]
    pad, row = max(2, cap // 2), int(round(cap * 1.8))
    bw, bh = max(s[0] for s in sizes) + 2 * pad, row * len(lines) + 2 * pad - (row - cap)
    x0 = x - bw if anchor.endswith("right") else x
    y0 = y - bh if anchor.startswith("bottom") else y
    h, w = img.shape[:2]
    x0, y0 = int(min(max(0, x0), max(0, w - bw))), int(min(max(0, y0), max(0, h - bh)))
    if shade:
        region = img[y0:y0 + bh, x0:x0 + bw]
        region[...] = (region * 0.4).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(img, text, (x0 + pad, y0 + pad + cap + i * row), _FONT, scale, _WHITE, th, cv2.LINE_AA)


def _colour_bar(panel: np.ndarray, lut: np.ndarray, vmax: float, scale: float) -> None:
    """A vertical bar at the right edge, bright (the map's maximum) at the top, 0 at the bottom, both labelled."""
    h, w = panel.shape[:2]
    bar_w = max(6, w // 48)
    bar_h = max(16, int(h * 0.5))
    x1 = w - max(4, w // 64)
    x0, y0 = x1 - bar_w, (h - bar_h) // 2
    ramp = np.linspace(255, 0, bar_h).round().astype(np.uint8)
    panel[y0:y0 + bar_h, x0:x1] = lut[ramp][:, None, :]
    cv2.rectangle(panel, (x0 - 1, y0 - 1), (x1, y0 + bar_h), _WHITE, 1)
    _text_lines(panel, [f"{vmax:.3g}"], x0 - 2, y0, scale * 0.8, "top-right")
    _text_lines(panel, ["0"], x0 - 2, y0 + bar_h, scale * 0.8, "bottom-right")


def _marker(panel: np.ndarray, xy: tuple[int, int], scale: float) -> None:
    """A ringed cross at the query: white on a black outline, readable on any colour."""
    r = max(5, int(round(12 * scale / 0.5)))
    x, y = int(xy[0]), int(xy[1])
    for colour, th in ((_BLACK, 4), (_WHITE, 2)):
        cv2.circle(panel, (x, y), r, colour, th, cv2.LINE_AA)
        cv2.line(panel, (x - 2 * r, y), (x - r // 2, y), colour, th, cv2.LINE_AA)
        cv2.line(panel, (x + r // 2, y), (x + 2 * r, y), colour, th, cv2.LINE_AA)
        cv2.line(panel, (x, y - 2 * r), (x, y - r // 2), colour, th, cv2.LINE_AA)
        cv2.line(panel, (x, y + r // 2), (x, y + 2 * r), colour, th, cv2.LINE_AA)


def attention_panel(image: np.ndarray, fmap: np.ndarray, key_map: np.ndarray, labels: Sequence[str],
                    query: tuple[int, int] | None, style: AttentionStyle = AttentionStyle()) -> np.ndarray:
    """The frame greyed, the map in colour over it (0 .. the map's maximum), colour bar, labels, query marker."""
    h, w = image.shape[:2]
    lut = colormap_lut(style.colormap)
    vmax = float(key_map.max()) if key_map.size else 0.0
    idx = np.clip(np.rint(fmap * (255.0 / vmax if vmax > 0 else 0.0)), 0, 255).astype(np.uint8)
    heat = cv2.LUT(cv2.cvtColor(idx, cv2.COLOR_GRAY2RGB), lut.reshape(1, 256, 3))
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    panel = blend(grey, heat, style.alpha)
    scale = text_scale((h, w))
    _colour_bar(panel, lut, vmax, scale)
    margin = max(2, h // 100)
    _text_lines(panel, list(labels), margin, h - margin, scale, "bottom-left")
    if query is not None:
        _marker(panel, query, scale)
    return panel


def _labels(ref: BlockRef, head: Head, heads: int, key_map: np.ndarray, query: tuple[int, int] | None) -> list[str]:
    what = "all heads" if head == MEAN and heads > 1 else f"head {1 if head == MEAN else head}/{heads}"
    peak = float(key_map.max()) * key_map.size  # in multiples of the uniform weight 1 / keys
    focus = f"query {query[0]},{query[1]}" if query is not None else "received (mean over queries)"
    return [f"stage {ref.stage}  block {ref.block}  {what}", f"{focus}  peak {peak:.1f}x uniform"]


class AttentionRenderer:
    """(frame, captured attention, optional class and depth maps) -> the canvas: one map panel per block (four in
    a 2x2 grid, stage order), then the ``beside`` panels: a row with one block, a column beside the grid."""

    def __init__(self, blocks: Sequence[BlockRef], head: Head, query: QueryPoint, box_hw: tuple[int, int],
                 beside: Sequence[str] = (), render_style: RenderStyle | None = None,
                 style: AttentionStyle = AttentionStyle(), depth_smoothing: float = 0.05) -> None:
        if len(blocks) not in (1, 4):
            raise ValueError(f"one block or one per stage, not {len(blocks)}")
        unknown = [b for b in beside if b not in BESIDE]
        if unknown or (beside and render_style is None):
            raise ValueError(f"beside panels {unknown or beside}: choose from {', '.join(BESIDE)} with a style")
        self.blocks = tuple(blocks)
        self.head = head
        self.query = query
        self.box_hw = tuple(box_hw)
        self.beside = tuple(beside)
        self.style = style
        self._panel_styles = {name: RenderStyle(palette=render_style.palette, class_names=render_style.class_names,
                                                view=name, alpha=render_style.alpha, legend=render_style.legend,
                                                colormap=render_style.colormap,
                                                depth_range=render_style.depth_range, hud=False)
                              for name in self.beside} if render_style is not None else {}
        self._smooth = SmoothedDepthRange(depth_smoothing) if depth_smoothing < 1 else None
        self._frame_hw: tuple[int, int] | None = None

    def click(self, xy: tuple[int, int] | None) -> None:
        """A click at canvas pixel ``xy`` moves the query there (every panel is frame-sized); None clears it."""
        if xy is None or self._frame_hw is None:
            self.query.set(None)
            return
        h, w = self._frame_hw
        self.query.set((int(xy[0]) % w, int(xy[1]) % h))

    def __call__(self, image: np.ndarray, attention: dict[BlockRef, BlockAttention], classes: np.ndarray | None = None,
                 depth: np.ndarray | None = None, hud_lines: Sequence[str] = ()) -> np.ndarray:
        h, w = image.shape[:2]
        query = self.query.get()
        check_query(query, (h, w))
        self._frame_hw = (h, w)
        fit = fit_for((h, w), self.box_hw)
        panels = []
        for ref in self.blocks:
            att = attention[ref]
            fmap, key_map = frame_map(att, fit, self.head, query)
            panels.append(attention_panel(image, fmap, key_map, _labels(ref, self.head, att.heads, key_map, query),
                                          query, self.style))
        extra = [self._beside(name, image, classes, depth, query) for name in self.beside]
        if len(panels) == 1:
            canvas = np.concatenate(panels + extra, axis=1)
        else:
            grid = np.concatenate([np.concatenate(panels[:2], axis=1), np.concatenate(panels[2:], axis=1)], axis=0)
            if extra:
                if len(extra) == 1:  # the column's other slot: the frame itself, query marked
                    extra.append(self._plain(image, query))
                grid = np.concatenate([grid, np.concatenate(extra[:2], axis=0)], axis=1)
            canvas = grid
        if hud_lines:
            draw_hud(canvas, hud_lines, text_scale((h, w)))
        return canvas

    def _beside(self, name: str, image: np.ndarray, classes: np.ndarray | None, depth: np.ndarray | None,
                query: tuple[int, int] | None) -> np.ndarray:
        st = self._panel_styles[name]
        rng = None
        if name == "depth" and depth is not None and self._smooth is not None and st.depth_range is None:
            rng = self._smooth.update(*frame_depth_range(depth, classes, st))
        panel = render_frame(image, classes, depth, st, depth_range=rng)
        if query is not None:
            _marker(panel, query, text_scale(image.shape[:2]))
        return panel

    def _plain(self, image: np.ndarray, query: tuple[int, int] | None) -> np.ndarray:
        panel = image.copy()
        if query is not None:
            _marker(panel, query, text_scale(image.shape[:2]))
        return panel


@dataclass
class RunAttention:
    """`run --view attention`: what the engine captures, and the renderer the render stage and the window share."""

    request: AttentionRequest
    renderer: AttentionRenderer

    def render(self, p: Any, hud: list[str]) -> np.ndarray:  # the render stage's call (p: runner.Processed)
        return self.renderer(p.frame.image, p.frame.extra["attention"], p.classes, p.depth, hud)


def for_run(cfg: Any, meta: Any, box_hw: tuple[int, int]) -> RunAttention:
    """The attention view of a ``RunConfig`` for a checkpoint: blocks and head checked against its sizes."""
    blocks = select_blocks(meta.depths, meta.num_heads, cfg.attention_stage, cfg.attention_block, cfg.attention_head)
    if "depth" in cfg.attention_with and meta.depth is None:
        raise UserError("--with depth needs a checkpoint with a depth head; this one is segmentation only")
    style = RenderStyle(palette=np.asarray(meta.palette, dtype=np.uint8), class_names=tuple(meta.class_names),
                        alpha=cfg.alpha, legend=cfg.legend, colormap=cfg.colormap, depth_range=cfg.depth_range)
    renderer = AttentionRenderer(blocks, cfg.attention_head, QueryPoint(cfg.attention_query), box_hw,
                                 beside=cfg.attention_with, render_style=style,
                                 style=AttentionStyle(cfg.attention_colormap, cfg.attention_alpha),
                                 depth_smoothing=cfg.depth_smoothing)
    # query vectors are kept only when a query is drawn, or may come (a click in the window); without one the
    # mean over queries is all that is needed
    queries = cfg.attention_query is not None or cfg.show
    return RunAttention(AttentionRequest(blocks, queries=queries), renderer)
