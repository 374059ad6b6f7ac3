"""The dual-head SegFormer: one MiT encoder, two All-MLP decoders (segmentation and depth).

The encoder is timm's PVTv2 with an MLP ratio of 4 in every stage, which is exactly MiT
(same authors, same layers; verified against Hugging Face's SegFormer in the tests).
Heads return stride-4 maps, as the official and Hugging Face heads do; upsampling to the
input size belongs to post-processing.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from torch import nn

from ..labels import default_class_names, default_palette
from .metadata import ModelMeta
from .variants import DEFAULT_VARIANT, VARIANTS, Variant, variant_name

__all__ = ["DEFAULT_VARIANT", "VARIANTS", "AllMLPHead", "SegFormer3D", "SegFormerOutput", "Variant", "build_model",
           "variant_name"]


@dataclass
class SegFormerOutput:
    seg_logits: torch.Tensor  # B x K x H/4 x W/4
    depth: torch.Tensor | None  # B x 1 x H/4 x W/4 raw depth channel (see meta.depth), None without a depth head


class AllMLPHead(nn.Module):
    """SegFormer's All-MLP decoder: per-stage 1x1 projection, upsample to stride 4, fuse, predict.

    Parameters keep the reference layout (proj[i], one fuse conv over the concatenation) so every
    checkpoint format maps onto them; forward() evaluates the same function in a cheaper order.
    """

    def __init__(self, in_dims: tuple[int, ...], dim: int, out_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_dims)  # proj[0] takes stage 1 (c1)
        self.fuse = nn.Conv2d(dim * len(in_dims), dim, 1, bias=False)  # input order c4, c3, c2, c1
        self.bn = nn.BatchNorm2d(dim)
        self.drop = nn.Dropout(dropout)
        self.pred = nn.Conv2d(dim, out_channels, 1)

    def linear_maps(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """fuse(concat(proj_i)) as per-stage matrices fuse_i @ proj_i (dim x C_i) and biases fuse_i @ b_i (dim).

        The one place the decoder's linear part is folded: forward() applies it, folding.py adds BatchNorm.
        """
        n, dim = len(self.proj), self.fuse.out_channels
        fuse = self.fuse.weight[:, :, 0, 0]  # dim x n*dim, input order c4, c3, c2, c1
        mats, biases = [], []
        for i, p in enumerate(self.proj):
            block = fuse[:, (n - 1 - i) * dim:(n - i) * dim]
            mats.append(block @ p.weight[:, :, 0, 0])
            biases.append(block @ p.bias)
        return mats, biases

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        # fuse(concat(upsample(proj_i(f_i)))) computed as sum_i upsample((fuse_i @ proj_i)(f_i)): the same
        # function (upsampling is linear with weights summing to 1, so it commutes with 1x1 convs and biases),
        # but no 4*dim-channel tensor is built at stride 4. Training runs about 2x faster on CPU.
        size = feats[0].shape[2:]
        mats, biases = self.linear_maps()
        x = None
        for i, (m, f) in enumerate(zip(mats, feats)):
            y = F.conv2d(f, m[:, :, None, None])
            if i:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = y if x is None else x + y
        x = x + sum(biases[1:], biases[0])[None, :, None, None]
        return self.pred(self.drop(F.relu(self.bn(x))))


class SegFormer3D(nn.Module):
    """MiT encoder shared by a segmentation head and (optionally) a depth head."""

    def __init__(self, meta: ModelMeta, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.meta = meta
        self.encoder = PyramidVisionTransformerV2(
            num_classes=0,
            depths=meta.depths,
            embed_dims=meta.embed_dims,
            num_heads=meta.num_heads,
            sr_ratios=meta.sr_ratios,
            mlp_ratios=(4, 4, 4, 4),  # MiT's Mix-FFN; PVTv2's default (8, 8, 4, 4) differs
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
        )
        self.seg_head = AllMLPHead(meta.embed_dims, meta.decoder_dim, meta.num_classes)
        self.depth_head = AllMLPHead(meta.embed_dims, meta.decoder_dim, 1) if meta.depth is not None else None

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Four NCHW feature maps at strides 4, 8, 16, 32."""
        x = self.encoder.patch_embed(x)
        feats = []
        for stage in self.encoder.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> SegFormerOutput:
        feats = self.encode(x)
        depth = self.depth_head(feats) if self.depth_head is not None else None
        return SegFormerOutput(self.seg_head(feats), depth)

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {
            "encoder": count(self.encoder),
            "seg_head": count(self.seg_head),
            "depth_head": count(self.depth_head),
            "total": count(self),
        }


def build_model(
    variant: str = DEFAULT_VARIANT,
    num_classes: int = 19,
    depth: bool = True,
    decoder_dim: int | None = None,
    meta: ModelMeta | None = None,
) -> SegFormer3D:
    """A freshly initialised dual-head SegFormer of a paper size (b0..b5).

    ``decoder_dim`` defaults to the paper's width (256 for B0/B1, 768 for B2-B5); the original
    Segformer3D used 256 with B3. Pass ``meta`` to take everything from existing metadata instead.
    """
    if meta is None:
        key = variant.lower()
        if key not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        v = VARIANTS[key]
        base = ModelMeta()
        meta = replace(
            base,
            variant=key,
            embed_dims=v.embed_dims,
            depths=v.depths,
            num_heads=v.num_heads,
            sr_ratios=v.sr_ratios,
            decoder_dim=decoder_dim or v.decoder_dim,
            class_names=default_class_names(num_classes),
            palette=default_palette(num_classes),
            depth=base.depth if depth else None,
        )
    model = SegFormer3D(meta)
    return model.eval()
