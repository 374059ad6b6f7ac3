"""What every format module shares: the source it is handed, the result, and architecture from shapes.

A format module exposes ``NAME`` and four functions, called in this order by ``read_checkpoint``:
  detect(src) -> bool                 does the file look like this format (names, header, config.json)
  filter(sd) -> sd                    its tensor names -> ours (``encoder.*`` is timm's pvt_v2 naming)
  meta(sd, src) -> ModelMeta          what the format implies (normalisation, depth, classes) + the shapes
  encoder_only(sd) -> bool            whether it holds only an encoder (initialises training, cannot run)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import torch

from ...errors import CheckpointError
from ...labels import default_class_names, default_palette
from ..metadata import ModelMeta
from ..variants import variant_name

StateDict = dict[str, torch.Tensor]
Rules = list[tuple[str, "str | Callable[[re.Match], str]"]]


@dataclass
class Checkpoint:
    format: str
    meta: ModelMeta
    state_dict: StateDict  # in this project's layout
    encoder_only: bool = False


@dataclass(frozen=True)
class Source:
    """One checkpoint as found on disk, before any renaming."""

    path: Path  # what the user named (a file or a Hugging Face directory)
    weights: Path  # the tensor file that was read
    keys: tuple[str, ...]  # its tensor names as stored (``module.`` already dropped)
    header: dict[str, str] = field(default_factory=dict)  # safetensors metadata; {} for torch files
    config: Path | None = None  # Hugging Face config.json beside the weights


class Format(Protocol):
    NAME: str

    def detect(self, src: Source) -> bool: ...
    def filter(self, sd: StateDict) -> StateDict: ...
    def meta(self, sd: StateDict, src: Source) -> ModelMeta: ...
    def encoder_only(self, sd: StateDict) -> bool: ...


def sub_all(key: str, rules: Rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def as_conv1x1(t: torch.Tensor) -> torch.Tensor:
    """NVlabs/HF heads use Linear layers ([out, in]); ours are 1x1 convs ([out, in, 1, 1])."""
    return t[:, :, None, None] if t.ndim == 2 else t


def has_seg_head(sd: StateDict) -> bool:
    return "seg_head.pred.weight" in sd


# Architecture from tensor shapes (no foreign format stores all of it; heads count comes from ``base``).

def infer_meta(sd: StateDict, base: ModelMeta) -> ModelMeta:
    """Encoder sizes, decoder width, class count and depth head read off the tensors."""
    try:
        dims = [sd["encoder.patch_embed.proj.weight"].shape[0]]
        dims += [sd[f"encoder.stages.{i}.downsample.proj.weight"].shape[0] for i in (1, 2, 3)]
    except KeyError as e:
        raise CheckpointError(f"no MiT encoder found (missing {e.args[0]})") from None
    depths, srs = [], []
    for i in range(4):
        blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"^encoder\.stages\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(max(blocks) + 1 if blocks else 0)
        sr = sd.get(f"encoder.stages.{i}.blocks.0.attn.sr.weight")
        srs.append(int(sr.shape[-1]) if sr is not None else 1)
    changes: dict = dict(
        embed_dims=tuple(int(d) for d in dims), depths=tuple(depths), sr_ratios=tuple(srs),
        variant=variant_name(tuple(dims), tuple(depths)),
    )
    if "seg_head.fuse.weight" in sd:
        changes["decoder_dim"] = int(sd["seg_head.fuse.weight"].shape[0])
    if has_seg_head(sd):
        k = int(sd["seg_head.pred.weight"].shape[0])
        if len(base.class_names) != k:
            changes["class_names"] = default_class_names(k)
            changes["palette"] = default_palette(k)
    if not any(key.startswith("depth_head.") for key in sd):
        changes["depth"] = None
    return replace(base, **changes)
