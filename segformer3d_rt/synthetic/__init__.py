"""The procedural driving world: camera images with exact Cityscapes labels and metric depth, rendered on
demand from (seed, frame index). It feeds training (the synthetic dataset), the synthetic video source, the
``synth`` command and benchmarks, so it lives apart from the dataset readers in :mod:`segformer3d_rt.data`.

``world`` holds :class:`SyntheticWorld` and :func:`render_sample`; ``scene`` builds drives, ``objects`` the
things on the street, ``raster`` the camera and rasteriser, ``shade`` the colours.
"""
from __future__ import annotations

from .world import (CLASS_NAMES, IGNORE, SKY, Camera, SyntheticFrame, SyntheticWorld, render_sample,
                    sample_drive)

__all__ = ["CLASS_NAMES", "IGNORE", "SKY", "Camera", "SyntheticFrame", "SyntheticWorld", "render_sample",
           "sample_drive"]
