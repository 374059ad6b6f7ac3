"""The original Segformer3D bare state_dict .pt: ``backbone.stages.*``, ``decoder_head.*``, ``depth_head.*``.

A B3 encoder with two 256-wide heads, trained with a typo in the green mean and inverse depth x10.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ..metadata import SEGFORMER3D_MEAN, DepthSpec, ModelMeta
from .common import Source, StateDict, as_conv1x1, infer_meta, sub_all
from . import mit

NAME = "segformer3d"
_HEADS = {"decoder_head": "seg_head", "depth_head": "depth_head"}
_HEAD = [(r"^linear_fuse\.", "fuse."), (r"^linear_pred\.", "pred.")]
_TO_MIT = [  # its encoder -> MiT names (stage i holds MiT's patch_embed{i+1}, block{i+1}, norm{i+1})
    (r"^backbone\.stages\.(\d)\.(patch_embed|norm)\.", lambda m: f"{m.group(2)}{int(m.group(1)) + 1}."),
    (r"^backbone\.stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"block{int(m.group(1)) + 1}.{m.group(2)}."),
    (r"\.ffn\.fc1\.", ".mlp.fc1."),
    (r"\.ffn\.conv\.", ".mlp.dwconv.dwconv."),
    (r"\.ffn\.fc2\.", ".mlp.fc2."),
]


def detect(src: Source) -> bool:
    return any(k.startswith("backbone.stages.") for k in src.keys)


def filter(sd: StateDict) -> StateDict:  # noqa: A001 (the format interface's name)
    out: StateDict = {}
    for k, v in sd.items():
        m = re.match(r"^(decoder_head|depth_head)\.(.*)$", k)
        if not m:
            out[mit.ours(sub_all(k, _TO_MIT))] = v
            continue
        head, rest = _HEADS[m.group(1)], m.group(2)
        lm = re.match(r"^layers\.(\d)\.(weight|bias)$", rest)
        if lm:  # its layers.0 takes stage 4: reverse the order
            out[f"{head}.proj.{3 - int(lm.group(1))}.{lm.group(2)}"] = as_conv1x1(v)
            continue
        rest = sub_all(rest, _HEAD)
        out[f"{head}.{rest}"] = as_conv1x1(v) if rest == "fuse.weight" else v
    return out


def meta(sd: StateDict, src: Source) -> ModelMeta:
    return infer_meta(sd, replace(
        ModelMeta(), mean=SEGFORMER3D_MEAN, source_format=NAME, input_size=(128, 256),
        depth=DepthSpec(kind="inverse", scale=10.0, unit="relative"),
        description="original Segformer3D weights (mean with its 0.56 typo, inverse depth x10)",
    ))


def encoder_only(sd: StateDict) -> bool:
    return False
