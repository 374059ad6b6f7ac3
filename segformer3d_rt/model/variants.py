"""The SegFormer paper sizes b0..b5: the only place model sizes are written down.

A leaf of ``model/``: ``segformer.py`` builds networks from it and ``metadata.py`` takes ModelMeta's default
sizes (B0's) from it, so neither has to import the other for the table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One paper size (ModelMeta's defaults are DEFAULT_VARIANT's)."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    decoder_dim: int
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)  # the same in every paper size
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)


# SegFormer paper (arXiv 2105.15203), Table 6 / official configs. Heads 1/2/5/8, SR 8/4/2/1 throughout.
DEFAULT_VARIANT = "b0"
VARIANTS: dict[str, Variant] = {
    "b0": Variant((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": Variant((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": Variant((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": Variant((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": Variant((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": Variant((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


def variant_name(embed_dims: tuple[int, ...], depths: tuple[int, ...]) -> str:
    """The paper size with these widths and depths, or "custom"."""
    for name, v in VARIANTS.items():
        if tuple(embed_dims) == v.embed_dims and tuple(depths) == v.depths:
            return name
    return "custom"
