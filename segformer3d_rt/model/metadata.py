"""What a checkpoint says about itself: classes, palette, normalisation, depth units.

These travel with the weights (inside the project's safetensors files) so that no stage of the
pipeline hard-codes them. Loaders of foreign formats fill in what those formats imply.

A checkpoint is untrusted input: every ModelMeta is checked against its schema when made (types, lengths,
ranges, known depth kinds), and a wrong one raises :class:`MetadataError` naming the key; the loaders turn it
into one line naming the file (``std = 0`` would otherwise run and write garbage silently).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch

from ..labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from .variants import DEFAULT_VARIANT, VARIANTS

_DEFAULT = VARIANTS[DEFAULT_VARIANT]  # the sizes live in the variant table (variants.py) only

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The original Segformer3D weights were trained with a typo in the green mean (0.56 for 0.456):
# reproducing it is what makes those weights work.
SEGFORMER3D_MEAN = (0.485, 0.56, 0.406)

DepthKind = Literal["metric", "inverse", "log"]
DEPTH_KINDS = ("metric", "inverse", "log")
MAX_SIDE = 4096  # the largest side of any size (input box, crop, frames): runtime.sizes bounds user sizes by it
MAX_CLASSES = 1000
MAX_WIDTH = 4096  # embedding and decoder widths


class MetadataError(ValueError):
    """A metadata key whose value the schema refuses: ``key`` and what it must be."""

    def __init__(self, key: str, wanted: str, value: Any) -> None:
        super().__init__(f"'{key}' must be {wanted}, not {value!r}"[:300])
        self.key = key


def _numbers(key: str, value: Any, n: int, positive: bool = False) -> None:
    ok = isinstance(value, tuple) and len(value) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in value)
    if not ok:
        raise MetadataError(key, f"{n} finite numbers" + (" > 0" if positive else ""), value)


def _ints(key: str, value: Any, n: int | None, low: int, high: int) -> None:
    ok = isinstance(value, tuple) and (n is None or len(value) == n) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value)
    if not ok:
        count = f"{n} " if n is not None else ""
        raise MetadataError(key, f"{count}whole numbers from {low} to {high}", value)


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

    def __post_init__(self) -> None:
        if self.kind not in DEPTH_KINDS:
            raise MetadataError("depth.kind", f"one of {', '.join(DEPTH_KINDS)}", self.kind)
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or \
                not (math.isfinite(self.scale) and self.scale > 0):
            raise MetadataError("depth.scale", "a finite number > 0", self.scale)
        if not isinstance(self.unit, str) or not self.unit:
            raise MetadataError("depth.unit", "text (\"m\" or \"relative\")", self.unit)

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

    def __post_init__(self) -> None:
        """The schema: types, lengths and ranges of every key (a checkpoint is untrusted input)."""
        _ints("embed_dims", self.embed_dims, 4, 1, MAX_WIDTH)
        _ints("depths", self.depths, 4, 1, 1000)
        _ints("num_heads", self.num_heads, 4, 1, 256)
        _ints("sr_ratios", self.sr_ratios, 4, 1, 64)
        if any(d % h for d, h in zip(self.embed_dims, self.num_heads)):
            raise MetadataError("num_heads", "divisors of embed_dims", self.num_heads)
        if isinstance(self.decoder_dim, bool) or not isinstance(self.decoder_dim, int) or \
                not 1 <= self.decoder_dim <= MAX_WIDTH:
            raise MetadataError("decoder_dim", f"a whole number from 1 to {MAX_WIDTH}", self.decoder_dim)
        names = self.class_names
        if not (isinstance(names, tuple) and 1 <= len(names) <= MAX_CLASSES and all(isinstance(n, str) for n in names)):
            raise MetadataError("class_names", f"a list of 1 to {MAX_CLASSES} names", names)
        pal = self.palette
        if not (isinstance(pal, tuple) and len(pal) == len(names)):
            raise MetadataError("palette", f"one colour per class ({len(names)})",
                                f"{len(pal)} colours" if isinstance(pal, tuple) else pal)
        for colour in pal:
            _ints("palette", colour, 3, 0, 255)
        _numbers("mean", self.mean, 3)
        _numbers("std", self.std, 3, positive=True)
        _ints("input_size", self.input_size, 2, 32, MAX_SIDE)
        if self.depth is not None and not isinstance(self.depth, DepthSpec):
            raise MetadataError("depth", "a depth spec (kind, scale, unit) or null", self.depth)
        for key in ("variant", "source_format", "description"):
            if not isinstance(getattr(self, key), str):
                raise MetadataError(key, "text", getattr(self, key))

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
        if isinstance(d.get("palette"), tuple):
            d["palette"] = tuple(tuple(p) if isinstance(p, list) else p for p in d["palette"])
        if depth is not None and not isinstance(depth, dict):
            raise MetadataError("depth", "a depth spec (kind, scale, unit) or null", depth)
        if depth is not None and set(depth) - {"kind", "scale", "unit"}:
            raise MetadataError("depth", "kind, scale and unit only", sorted(depth))
        return cls(**d, depth=DepthSpec(**depth) if depth is not None else None)

    def with_(self, **changes: Any) -> "ModelMeta":
        return replace(self, **changes)
