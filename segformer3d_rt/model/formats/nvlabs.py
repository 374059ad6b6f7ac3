"""NVlabs SegFormer .pth (mmseg): ``state_dict`` with ``backbone.*`` (a MiT) and ``decode_head.*``."""
from __future__ import annotations

import re
from dataclasses import replace

from ..metadata import ModelMeta
from .common import Source, StateDict, as_conv1x1, has_seg_head, infer_meta, sub_all
from . import mit

NAME = "nvlabs"
_HEAD = [(r"^linear_fuse\.conv\.", "fuse."), (r"^linear_fuse\.bn\.", "bn."), (r"^linear_pred\.", "pred.")]


def detect(src: Source) -> bool:
    return any(k.startswith("backbone.patch_embed1.") for k in src.keys)


def filter(sd: StateDict) -> StateDict:  # noqa: A001 (the format interface's name)
    out: StateDict = {}
    for k, v in sd.items():
        k = k.removeprefix("backbone.")
        if k.startswith("decode_head."):
            k = k[len("decode_head."):]
            if k.startswith("conv_seg."):  # mmseg's unused default classifier
                continue
            m = re.match(r"^linear_c(\d)\.proj\.(weight|bias)$", k)
            if m:
                out[f"seg_head.proj.{int(m.group(1)) - 1}.{m.group(2)}"] = as_conv1x1(v)
                continue
            k = sub_all(k, _HEAD)
            out[f"seg_head.{k}"] = as_conv1x1(v) if k == "fuse.weight" else v
        elif not k.startswith("head."):  # head: a MiT's ImageNet classifier
            out[mit.ours(k)] = v
    return out


def meta(sd: StateDict, src: Source) -> ModelMeta:
    return infer_meta(sd, replace(ModelMeta(), depth=None, source_format=NAME, input_size=(1024, 2048)))


def encoder_only(sd: StateDict) -> bool:
    return not has_seg_head(sd)
