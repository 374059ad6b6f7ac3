"""The procedural driving world: camera images with exact Cityscapes labels and metric depth, rendered on
demand from (seed, frame index). It feeds training (the synthetic dataset), the synthetic video source, the
``synth`` command and benchmarks, so it lives apart from the dataset readers in :mod:`segformer3d_rt.data`.

``world`` holds :class:`SyntheticWorld` and :func:`render_sample`; ``scene`` builds drives, ``objects`` the
things on the street, ``raster`` the camera and rasteriser, ``shade`` the colours; ``seeds`` names the seed
spaces of the training and held-out scenes.
"""
from __future__ import annotations

from .seeds import HELD_OUT_SEED, SEED_STRIDE, TRAIN_SEED
from .world import (CLASS_NAMES, IGNORE, SKY, Camera, SyntheticFrame, SyntheticWorld, render_sample,
                    sample_drive)

__all__ = ["CLASS_NAMES", "HELD_OUT_SEED", "IGNORE", "SEED_STRIDE", "SKY", "TRAIN_SEED", "Camera", "SyntheticFrame",
           "SyntheticWorld", "render_sample", "sample_drive"]
