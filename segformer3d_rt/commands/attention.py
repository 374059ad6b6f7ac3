"""`segformer3d-rt attention`: MiT's attention maps drawn on an image, a folder, a video or a camera.

One frame at a time: fit (the pipeline's preprocess), run the network with hooks on the chosen blocks only,
draw (``pipeline/attention_view.py``), write: a picture (.png/.jpg: one frame), a video (.mp4/.mkv/.mov),
a GIF (.gif) or a folder of PNGs (a name without a suffix).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..model import load_model
from ..model.attention import MEAN, AttentionRequest, Head, check_request, parse_head, select_blocks
from ..pipeline.attention_fit import check_query, parse_query
from ..pipeline.attention_view import BESIDE, AttentionRenderer, AttentionStyle, QueryPoint
from ..pipeline.frames import Frame
from ..pipeline.infer import InferenceEngine
from ..pipeline.preprocess import Preprocessor
from ..pipeline.render import COLORMAPS, RenderStyle
from ..pipeline.sinks import PICTURE_SUFFIXES, CONTAINER_FORMATS, GifSink, ImageDirSink, Mp4Sink, PictureSink, Sink
from ..pipeline.sources import open_source
from ..runtime.bundled import default_weights
from ..runtime.device import resolve_device, resolve_precision
from ..runtime.paths import check_outputs

__all__ = ["AttentionConfig", "parse_head", "parse_query", "parse_with", "run_attention"]


@dataclass
class AttentionConfig:
    """`attention`: the maps of one ``stage`` (None: all four, in a 2x2 grid), its ``block`` (None: the last),
    ``head`` (a number from 1, or "mean"), for the ``query`` pixel (x, y) of the source (None: the attention each
    location receives), with the heads' outputs ``beside`` them (--with overlay / depth)."""

    source: str
    output: str
    weights: str | None = None  # None: the bundled default
    stage: int | None = None
    block: int | None = None
    head: Head = MEAN
    query: tuple[int, int] | None = None
    beside: tuple[str, ...] = ()
    frame: int = 0  # a picture output: which frame of the source (0: the first)
    max_frames: int | None = None
    input_size: tuple[int, int] | None = None  # H x W box; None: the checkpoint's recommendation
    device: str = "auto"
    precision: str = "auto"
    colormap: str = "inferno"
    alpha: float = 0.6
    crf: int = 23


def parse_with(values: Iterable[str] | None) -> tuple[str, ...]:
    """--with overlay --with depth, or --with overlay,depth -> ('overlay', 'depth'), in the order given."""
    out: list[str] = []
    for value in values or ():
        for name in (v.strip().lower() for v in value.split(",") if v.strip()):
            if name not in BESIDE:
                raise UserError(f"--with {name}: choose {' or '.join(BESIDE)}")
            if name not in out:
                out.append(name)
    return tuple(out)


def _output_kind(output: str) -> str:
    suffix = Path(output).suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        return "picture"
    if suffix == ".gif":
        return "gif"
    if suffix in CONTAINER_FORMATS:
        return "video"
    if not suffix:
        return "folder"
    raise UserError(f"output '{output}': unknown kind (a .png/.jpg picture, a .mp4/.mkv/.mov video, a .gif, "
                    "or a folder for one PNG per frame)")


def _check(cfg: AttentionConfig) -> str:
    """Everything that needs no checkpoint and no frame; returns the output kind."""
    check_request(cfg.stage, cfg.block, cfg.head)
    if cfg.query is not None and min(cfg.query) < 0:
        raise UserError(f"--query {cfg.query[0]},{cfg.query[1]}: pixel positions start at 0")
    for name in cfg.beside:
        if name not in BESIDE:
            raise UserError(f"--with {name}: choose {' or '.join(BESIDE)}")
    if cfg.frame < 0:
        raise UserError(f"--frame {cfg.frame}: frames are numbered from 0")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if cfg.colormap not in COLORMAPS:
        raise UserError(f"unknown colour map '{cfg.colormap}'; choose one of {', '.join(COLORMAPS)}")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, not {cfg.alpha}")
    kind = _output_kind(cfg.output)
    if cfg.frame and kind != "picture":
        raise UserError("--frame picks the frame of a picture output (-o NAME.png)")
    return kind


def _open_sink(kind: str, cfg: AttentionConfig, source: Any) -> Sink:
    if kind == "picture":
        return PictureSink(cfg.output)
    if kind == "gif":
        return GifSink(cfg.output, fps=source.fps)
    if kind == "video":
        return Mp4Sink(cfg.output, fps=source.fps or 25.0, time_base=getattr(source, "time_base", None),
                       crf=cfg.crf)
    return ImageDirSink(cfg.output, inputs=getattr(source, "files", ()))


def _frames(source: Any, cfg: AttentionConfig, kind: str) -> Iterator[Frame]:
    """The frames to draw: for a picture only frame ``cfg.frame`` (the ones before are decoded, not run)."""
    n = 0
    for frame in source.frames():
        if kind == "picture":
            if n == cfg.frame:
                yield frame
                return
            n += 1
            continue
        yield frame
    if kind == "picture":
        raise UserError(f"--frame {cfg.frame}: the source has only {n} frame(s)")


def run_attention(cfg: AttentionConfig) -> int:
    """Draw the maps for every frame of the source into ``cfg.output``; returns the exit code (130: interrupted,
    with everything drawn so far written)."""
    kind = _check(cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    weights = Path(cfg.weights) if cfg.weights else default_weights()
    check_outputs([("source", cfg.source), ("weights", weights)], [("output", cfg.output)])
    model = load_model(weights)
    meta = model.meta
    blocks = select_blocks(meta.depths, meta.num_heads, cfg.stage, cfg.block, cfg.head)
    if "depth" in cfg.beside and meta.depth is None:
        raise UserError("--with depth needs a checkpoint with a depth head; this one is segmentation only")
    box = tuple(cfg.input_size or meta.input_size)
    # query vectors only when a query is drawn: without one, the mean over queries is all that is kept
    engine = InferenceEngine(model, device, dtype, cuda_graphs=False,
                             attention=AttentionRequest(blocks, queries=cfg.query is not None))
    preprocess = Preprocessor(box)
    style = RenderStyle(palette=np.asarray(meta.palette, dtype=np.uint8), class_names=tuple(meta.class_names))
    renderer = AttentionRenderer(blocks, cfg.head, QueryPoint(cfg.query), box, beside=cfg.beside,
                                 render_style=style, style=AttentionStyle(cfg.colormap, cfg.alpha))
    written = 0
    interrupted = False
    with open_source(cfg.source) as source:
        frames = _frames(source, cfg, kind)
        first = next(frames, None)
        if first is None:
            raise UserError(f"'{cfg.source}' gave no frames")
        check_query(cfg.query, (first.height, first.width))  # before any work: a query outside the frame
        with _open_sink(kind, cfg, source) as sink:
            try:
                for frame in _chain(first, frames):
                    check_query(cfg.query, (frame.height, frame.width))  # a folder's images may differ in size
                    result = engine(preprocess(frame)[None])
                    depth = result.depth[0].numpy() if result.depth is not None else None
                    canvas = renderer(frame.image, result.attention[0], result.classes[0].numpy(), depth)
                    sink.write(frame, canvas)
                    written += 1
                    if cfg.max_frames is not None and written >= cfg.max_frames:
                        break
            except KeyboardInterrupt:  # keep what was drawn: the sink closes normally below
                interrupted = True
    print(f"{'interrupted: ' if interrupted else ''}wrote {written} frame(s) of attention maps to {cfg.output}")
    return 130 if interrupted else 0


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest
