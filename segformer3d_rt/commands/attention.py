"""`segformer3d-rt attention`: MiT's attention maps drawn on an image, a folder, a video or a camera.

It is `run` with the attention view (``pipeline/attention_view.py``): the same pipeline, sinks, signals and
report. What differs is only its defaults and names: the maps' colour map and weight (``--colormap``,
``--alpha``), and ``--frame N``: a picture output draws frame N of the source (its first frames are decoded,
not run).
"""
from __future__ import annotations

from dataclasses import replace

from ..pipeline.config import RunConfig
from ._run import run_config

__all__ = ["run_attention"]


def run_attention(cfg: RunConfig) -> int:
    """Draw the maps for every frame of the source into the outputs; returns the exit code (130: interrupted,
    with everything drawn so far written)."""
    if cfg.view != "attention":
        cfg = replace(cfg, view="attention").validate()
    return run_config(cfg)
