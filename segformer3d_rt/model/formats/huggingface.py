"""A Hugging Face directory or file: config.json + model.safetensors / pytorch_model.bin.

``SegformerForSemanticSegmentation`` / ``SegformerModel`` names. The encoder is MiT with other attribute
names and the kv projection split into key and value; it is renamed to MiT's names and goes through
timm's filter (mit.py) like every other MiT.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from ...errors import CheckpointError
from ...labels import CITYSCAPES_CLASSES, default_palette
from ..metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from .common import Source, StateDict, as_conv1x1, has_seg_head, infer_meta, sub_all
from . import mit

NAME = "huggingface"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HEAD = [(r"^linear_fuse\.", "fuse."), (r"^batch_norm\.", "bn."), (r"^classifier\.", "pred.")]
_TO_MIT = [
    (r"^encoder\.patch_embeddings\.(\d)\.layer_norm\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.norm."),
    (r"^encoder\.patch_embeddings\.(\d)\.proj\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.proj."),
    (r"^encoder\.block\.(\d)\.(\d+)\.", lambda m: f"block{int(m.group(1)) + 1}.{m.group(2)}."),
    (r"^encoder\.layer_norm\.(\d)\.", lambda m: f"norm{int(m.group(1)) + 1}."),
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.attention\.self\.query\.", ".attn.q."),
    (r"\.attention\.self\.sr\.", ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", ".attn.norm."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
]  # mlp.dwconv.dwconv is already MiT's name


def locate(path: Path) -> tuple[Path, Path | None]:
    """(the tensor file to read, the config.json that makes it a Hugging Face checkpoint, or None)."""
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"'{path}' is a directory but not a Hugging Face checkpoint (no config.json)")
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name, config
        raise CheckpointError(f"'{path}' is a directory without model.safetensors or pytorch_model.bin")
    config = path.parent / "config.json"
    return path, config if path.name in WEIGHT_FILES and config.is_file() else None


def detect(src: Source) -> bool:
    return src.config is not None or any(k.startswith(("segformer.encoder.", "encoder.patch_embeddings."))
                                         for k in src.keys)


def filter(sd: StateDict) -> StateDict:  # noqa: A001 (the format interface's name)
    out: StateDict = {}
    kv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        k = k.removeprefix("segformer.")
        if k.startswith("classifier."):  # SegformerForImageClassification head
            continue
        if k.startswith("decode_head."):
            k = k[len("decode_head."):]
            m = re.match(r"^linear_c\.(\d)\.proj\.(weight|bias)$", k)
            if m:
                out[f"seg_head.proj.{m.group(1)}.{m.group(2)}"] = as_conv1x1(v)
                continue
            out[f"seg_head.{sub_all(k, _HEAD)}"] = v
            continue
        m = re.match(r"^(.*)\.attention\.self\.(key|value)\.(weight|bias)$", k)
        if m:  # HF splits MiT's kv projection; MiT keeps key rows then value rows
            kv.setdefault(f"{m.group(1)}.attention.self.kv.{m.group(3)}", {})[m.group(2)] = v
            continue
        out[mit.ours(sub_all(k, _TO_MIT))] = v
    for k, parts in kv.items():
        if set(parts) != {"key", "value"}:
            raise CheckpointError(f"Hugging Face checkpoint has {k} without its key/value partner")
        out[mit.ours(sub_all(k, _TO_MIT).replace(".attention.self.kv.", ".attn.kv."))] = \
            torch.cat([parts["key"], parts["value"]], dim=0)
    return out


def meta(sd: StateDict, src: Source) -> ModelMeta:
    config = json.loads(src.config.read_text()) if src.config else {}
    preproc_path = src.weights.parent / "preprocessor_config.json"
    preproc = (json.loads(preproc_path.read_text()) if preproc_path.is_file() else None) or {}
    base = replace(ModelMeta(), depth=None, source_format=NAME, input_size=(512, 1024))
    id2label = config.get("id2label") or {}
    names = tuple(str(id2label[k]) for k in sorted(id2label, key=int)) if id2label else base.class_names
    cityscapes = len(names) == 19 and [n.lower() for n in names] == list(CITYSCAPES_CLASSES)
    base = replace(
        base,
        num_heads=tuple(config.get("num_attention_heads", base.num_heads)),
        class_names=CITYSCAPES_CLASSES if cityscapes else names,
        palette=default_palette(len(names)),
        mean=tuple(preproc.get("image_mean", IMAGENET_MEAN)),
        std=tuple(preproc.get("image_std", IMAGENET_STD)),
    )
    result = infer_meta(sd, base)
    for field, key in (("embed_dims", "hidden_sizes"), ("depths", "depths"), ("sr_ratios", "sr_ratios")):
        if key in config and tuple(config[key]) != tuple(getattr(result, field)):
            raise CheckpointError(
                f"'{src.path}': config.json says {key}={config[key]} but the weights have {getattr(result, field)}"
            )
    return result


def encoder_only(sd: StateDict) -> bool:
    return not has_seg_head(sd)
