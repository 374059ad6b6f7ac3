"""The one forward recipe: uint8 frames -> resized and normalised -> the network -> decoded outputs.

Used by `run` (``infer.InferenceEngine``), `eval`, `bench` and the figure scripts, so that every number any of
them reports comes from the same arithmetic. The network is a :class:`~segformer3d_rt.runtime.backends.base.Network` (the torch model or an
exported-network backend; it computes in its own precision); its metadata says how to normalise and how to
read the depth channel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import SegFormerOutput
from ..runtime.backends.base import Network
from ..runtime.normalize import Normalizer
from .postprocess import upsample_argmax


@dataclass
class Decoded:
    classes: torch.Tensor | None  # B x H x W uint8 at the size asked for (None without a segmentation head)
    depth: torch.Tensor | None  # B x h x w float32 in the checkpoint's depth unit (None without a depth head)


class Forward:
    """``forward(images, size)``: B x H x W x 3 uint8 frames (any device) fitted to ``size`` (H, W), normalised
    with the checkpoint's mean/std, run by the network, decoded on its device."""

    def __init__(self, network: Network) -> None:
        self.network, self.meta, self.device = network, network.meta, network.device
        self._normalise = Normalizer(self.meta.mean, self.meta.std, self.device, scale=255.0)  # on 0..255 values

    def inputs(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 NHWC -> the network's normalised float NCHW input at ``size`` (antialiased when shrinking)."""
        x = images.permute(0, 3, 1, 2).float()
        if size is not None and tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self._normalise(x)

    def raw(self, x: torch.Tensor) -> SegFormerOutput:
        return self.network(x)

    def decode(self, out: SegFormerOutput, classes_size: tuple[int, int], depth_size: tuple[int, int] | None = None
               ) -> Decoded:
        """Class map at ``classes_size`` (exact upsampled argmax); depth at stride 4, or bilinearly resized to
        ``depth_size``."""
        classes = upsample_argmax(out.seg_logits, classes_size) if out.seg_logits is not None else None
        depth = None
        if out.depth is not None and self.meta.depth is not None:
            raw = out.depth.float()
            if depth_size is not None:
                raw = F.interpolate(raw, size=depth_size, mode="bilinear", align_corners=False)
            depth = self.meta.depth.to_depth(raw)[:, 0]
        return Decoded(classes, depth)

    def __call__(self, images: torch.Tensor, size: tuple[int, int] | None = None,
                 out_size: tuple[int, int] | None = None, depth_size: tuple[int, int] | None = None) -> Decoded:
        """``out_size``: where the class map is wanted (default: the network's input size)."""
        x = self.inputs(images.to(self.device), size)
        return self.decode(self.raw(x), out_size or tuple(x.shape[2:]), depth_size)
