"""What a checkpoint says about itself: classes, palette, normalisation, depth units.

These travel with the weights (inside the project's safetensors files) so that no stage of the
pipeline hard-codes them. Loaders of foreign formats fill in what those formats imply.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch

from ..labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from .segformer import DEFAULT_VARIANT, VARIANTS

_DEFAULT = VARIANTS[DEFAULT_VARIANT]  # the sizes live in the variant table only

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The original Segformer3D weights were trained with a typo in the green mean (0.56 for 0.456):
# reproducing it is what makes those weights work.
SEGFORMER3D_MEAN = (0.485, 0.56, 0.406)

DepthKind = Literal["metric", "inverse", "log"]


@dataclass(frozen=True)
class DepthSpec:
    """How to read the raw depth channel.

    metric:  depth = |raw| * scale
    inverse: raw = scale * inverse depth, so depth = scale / |raw|
    log:     raw = ln(depth)
    ``unit`` is "m" when the result is metres, "relative" when its scale is unknown.
    """

    kind: DepthKind = "log"
    scale: float = 1.0
    unit: str = "m"

    def to_depth(self, raw: torch.Tensor) -> torch.Tensor:
        if self.kind == "metric":
            return raw.abs() * self.scale
        if self.kind == "inverse":
            return self.scale / raw.abs().clamp_min(1e-6)
        if self.kind == "log":
            return raw.clamp(-10.0, 10.0).exp()
        raise ValueError(f"unknown depth kind {self.kind!r}")

    def from_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """The raw target for a depth map (0 = invalid stays 0)."""
        valid = depth > 0
        d = depth.clamp_min(1e-6)
        if self.kind == "metric":
            raw = d / self.scale
        elif self.kind == "inverse":
            raw = self.scale / d
        else:
            raw = d.log()
        return torch.where(valid, raw, torch.zeros_like(raw))

    def describe(self) -> str:
        if self.kind == "metric":
            return f"depth in {self.unit} (x{self.scale:g})" if self.scale != 1 else f"depth in {self.unit}"
        if self.kind == "inverse":
            return f"inverse depth x{self.scale:g} ({self.unit})"
        return f"log depth ({self.unit})"


@dataclass(frozen=True)
class ModelMeta:
    """Architecture plus everything a user of the outputs needs to know."""

    variant: str = DEFAULT_VARIANT
    embed_dims: tuple[int, ...] = _DEFAULT.embed_dims
    depths: tuple[int, ...] = _DEFAULT.depths
    num_heads: tuple[int, ...] = _DEFAULT.num_heads
    sr_ratios: tuple[int, ...] = _DEFAULT.sr_ratios
    decoder_dim: int = _DEFAULT.decoder_dim
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES
    palette: tuple[tuple[int, int, int], ...] = CITYSCAPES_PALETTE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] = (512, 1024)  # recommended H, W
    depth: DepthSpec | None = field(default_factory=DepthSpec)
    source_format: str = "segformer3d-rt"
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        d: dict[str, Any] = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown metadata fields {sorted(unknown)}")
        depth = d.pop("depth", None)
        tuples = {k: tuple(v) for k, v in d.items() if isinstance(v, list)}
        d.update(tuples)
        d["palette"] = tuple(tuple(int(c) for c in p) for p in d.get("palette", ()))
        d["input_size"] = tuple(d.get("input_size", (512, 1024)))
        return cls(**d, depth=DepthSpec(**depth) if depth is not None else None)

    def with_(self, **changes: Any) -> "ModelMeta":
        return replace(self, **changes)
