"""NVlabs MiT ImageNet backbone (mit_bX.pth): encoder only, for initialisation.

Its names (``patch_embed{k}``, ``block{k}.{j}``, ``norm{k}``, ``mlp.dwconv.dwconv``, k = 1..4) are the
canonical MiT layout. timm's ``pvt_v2.checkpoint_filter_fn`` maps exactly these onto its pvt_v2 modules
(``patch_embed``, ``stages.{k-1}.downsample``/``blocks``/``norm``), which our encoder is; the other
foreign formats rename their encoders to MiT names and come through here too.
"""
from __future__ import annotations

from dataclasses import replace

from timm.models.pvt_v2 import checkpoint_filter_fn

from ..metadata import ModelMeta
from .common import Source, StateDict, infer_meta

NAME = "mit"
_TIMM_ENCODER = ("patch_embed.", "stages.")  # top-level names of timm's pvt_v2 that hold weights


def ours(mit_key: str) -> str:
    """One MiT name -> ``encoder.`` + timm's name for it; a name that is not MiT's passes through unchanged."""
    # a one-entry state_dict through timm's filter keeps each caller's key order; its model argument is unused
    (key,) = checkpoint_filter_fn({mit_key: None}, None)
    return f"encoder.{key}" if key.startswith(_TIMM_ENCODER) else key


def detect(src: Source) -> bool:
    return any(k.startswith("patch_embed1.") for k in src.keys)


def filter(sd: StateDict) -> StateDict:  # noqa: A001 (the format interface's name)
    return {ours(k): v for k, v in sd.items() if not k.startswith("head.")}  # head.*: the ImageNet classifier


def meta(sd: StateDict, src: Source) -> ModelMeta:
    return infer_meta(sd, replace(ModelMeta(), source_format=NAME))


def encoder_only(sd: StateDict) -> bool:
    return True
