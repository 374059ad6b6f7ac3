"""Every checkpoint format users bring, read into this project's layout and loaded strictly.

Formats (auto-detected):
  segformer3d-rt  this project's .safetensors with its metadata
  segformer3d     the original Segformer3D bare state_dict .pt (B3 encoder, two 256-wide heads)
  nvlabs          NVlabs SegFormer .pth (``state_dict`` inside; segmentation only)
  mit             NVlabs MiT ImageNet backbone (mit_bX.pth): encoder only, for initialisation
  huggingface     a Hugging Face directory or file (config.json + model.safetensors / pytorch_model.bin)

Each foreign layout has a small key filter below (like timm's ``checkpoint_filter_fn``) that maps
its names onto ours. Nothing is loaded partially: any missing, unexpected or mis-shaped tensor
is an error that names them. ``torch.load`` only ever runs with ``weights_only=True``.
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from ..errors import CheckpointError
from .metadata import (
    CITYSCAPES_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SEGFORMER3D_MEAN,
    DepthSpec,
    ModelMeta,
    default_class_names,
    default_palette,
)
from .segformer import NUM_HEADS, SegFormer3D, variant_name

META_KEY = "segformer3d_rt"
StateDict = dict[str, torch.Tensor]


@dataclass
class Checkpoint:
    format: str
    meta: ModelMeta
    state_dict: StateDict  # in this project's layout
    encoder_only: bool = False


# ----------------------------------------------------------------------------------------------
# Key filters: foreign layout -> ours (``encoder.*`` is timm's pvt_v2 naming).

def _sub_all(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


_NVLABS_ENCODER = [
    (r"^patch_embed(\d)\.", lambda m: _stage_embed_from(int(m.group(1)) - 1)),
    (r"^block(\d)\.(\d+)\.", lambda m: f"encoder.stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}."),
    (r"^norm(\d)\.", lambda m: f"encoder.stages.{int(m.group(1)) - 1}.norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
]


def _stage_embed_from(i: int) -> str:
    return "encoder.patch_embed." if i == 0 else f"encoder.stages.{i}.downsample."


def _as_conv1x1(t: torch.Tensor) -> torch.Tensor:
    """NVlabs/HF heads use Linear layers ([out, in]); ours are 1x1 convs ([out, in, 1, 1])."""
    return t[:, :, None, None] if t.ndim == 2 else t


def filter_nvlabs(sd: StateDict, head: str = "seg_head") -> StateDict:
    """NVlabs SegFormer (``backbone.*``, ``decode_head.*``) or a bare MiT backbone -> ours."""
    out: StateDict = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        if k.startswith("decode_head."):
            k = k[len("decode_head."):]
            if k.startswith("conv_seg."):  # mmseg's unused default classifier
                continue
            m = re.match(r"^linear_c(\d)\.proj\.(weight|bias)$", k)
            if m:
                out[f"{head}.proj.{int(m.group(1)) - 1}.{m.group(2)}"] = _as_conv1x1(v)
                continue
            k = _sub_all(k, [(r"^linear_fuse\.conv\.", "fuse."), (r"^linear_fuse\.bn\.", "bn."),
                             (r"^linear_pred\.", "pred.")])
            out[f"{head}.{k}"] = _as_conv1x1(v) if k == "fuse.weight" else v
            continue
        if k.startswith("head."):  # ImageNet classifier of mit_bX.pth
            continue
        out[_sub_all(k, _NVLABS_ENCODER)] = v
    return out


_SEGFORMER3D_HEADS = {"decoder_head": "seg_head", "depth_head": "depth_head"}


def filter_segformer3d(sd: StateDict) -> StateDict:
    """The original Segformer3D layout (``backbone.stages.*``, ``decoder_head.*``, ``depth_head.*``) -> ours."""
    out: StateDict = {}
    for k, v in sd.items():
        m = re.match(r"^(decoder_head|depth_head)\.(.*)$", k)
        if m:
            head, rest = _SEGFORMER3D_HEADS[m.group(1)], m.group(2)
            lm = re.match(r"^layers\.(\d)\.(weight|bias)$", rest)
            if lm:  # its layers.0 takes stage 4: reverse the order
                out[f"{head}.proj.{3 - int(lm.group(1))}.{lm.group(2)}"] = _as_conv1x1(v)
                continue
            rest = _sub_all(rest, [(r"^linear_fuse\.", "fuse."), (r"^linear_pred\.", "pred.")])
            out[f"{head}.{rest}"] = _as_conv1x1(v) if rest == "fuse.weight" else v
            continue
        k = _sub_all(k, [
            (r"^backbone\.stages\.(\d)\.patch_embed\.", lambda mm: _stage_embed_from(int(mm.group(1)))),
            (r"^backbone\.stages\.", "encoder.stages."),
            (r"\.ffn\.fc1\.", ".mlp.fc1."),
            (r"\.ffn\.conv\.", ".mlp.dwconv."),
            (r"\.ffn\.fc2\.", ".mlp.fc2."),
        ])
        out[k] = v
    return out


_HF_RULES = [
    (r"^encoder\.patch_embeddings\.(\d)\.layer_norm\.", lambda m: _stage_embed_from(int(m.group(1))) + "norm."),
    (r"^encoder\.patch_embeddings\.(\d)\.proj\.", lambda m: _stage_embed_from(int(m.group(1))) + "proj."),
    (r"^encoder\.block\.(\d)\.(\d+)\.", lambda m: f"encoder.stages.{m.group(1)}.blocks.{m.group(2)}."),
    (r"^encoder\.layer_norm\.(\d)\.", lambda m: f"encoder.stages.{m.group(1)}.norm."),
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.attention\.self\.query\.", ".attn.q."),
    (r"\.attention\.self\.sr\.", ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", ".attn.norm."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
]


def filter_huggingface(sd: StateDict) -> StateDict:
    """Hugging Face ``SegformerForSemanticSegmentation`` / ``SegformerModel`` names -> ours."""
    out: StateDict = {}
    kv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith("segformer."):
            k = k[len("segformer."):]
        if k.startswith("classifier."):  # SegformerForImageClassification head
            continue
        if k.startswith("decode_head."):
            k = k[len("decode_head."):]
            m = re.match(r"^linear_c\.(\d)\.proj\.(weight|bias)$", k)
            if m:
                out[f"seg_head.proj.{m.group(1)}.{m.group(2)}"] = _as_conv1x1(v)
                continue
            k = _sub_all(k, [(r"^linear_fuse\.", "fuse."), (r"^batch_norm\.", "bn."), (r"^classifier\.", "pred.")])
            out[f"seg_head.{k}"] = v
            continue
        m = re.match(r"^(.*)\.attention\.self\.(key|value)\.(weight|bias)$", k)
        if m:  # HF splits MiT's kv projection; ours keeps key rows then value rows
            kv.setdefault(f"{m.group(1)}.attention.self.kv.{m.group(3)}", {})[m.group(2)] = v
            continue
        out[_sub_all(k, _HF_RULES)] = v
    for k, parts in kv.items():
        name = _sub_all(k, _HF_RULES).replace(".attention.self.kv.", ".attn.kv.")
        if set(parts) != {"key", "value"}:
            raise CheckpointError(f"Hugging Face checkpoint has {k} without its key/value partner")
        out[name] = torch.cat([parts["key"], parts["value"]], dim=0)
    return out


# ----------------------------------------------------------------------------------------------
# Architecture from tensor shapes (no format stores all of it; heads count is the one constant).

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
    if "seg_head.pred.weight" in sd:
        k = int(sd["seg_head.pred.weight"].shape[0])
        if len(base.class_names) != k:
            changes["class_names"] = default_class_names(k)
            changes["palette"] = default_palette(k)
    if not any(key.startswith("depth_head.") for key in sd):
        changes["depth"] = None
    return replace(base, **changes)


# ----------------------------------------------------------------------------------------------
# Reading files.

def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"'{path}' is truncated or corrupt ({e})") from None
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "zip archive" in msg or "central directory" in msg or "PytorchStreamReader" in msg:
            raise CheckpointError(f"'{path}' is truncated or corrupt ({msg})") from None
        raise CheckpointError(f"'{path}' is not a readable checkpoint ({msg})") from None
    except EOFError:
        raise CheckpointError(f"'{path}' is truncated or corrupt (unexpected end of file)") from None
    except Exception as e:  # pickle.UnpicklingError and friends: not a tensor file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in first:
            raise CheckpointError(
                f"'{path}' holds Python objects that safe loading (weights_only=True) refuses; not loaded"
            ) from None
        raise CheckpointError(f"'{path}' is not a checkpoint ({first})") from None


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return load_file(str(path)), header
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({first})") from None


def _tensor_dict(obj: object, path: Path) -> StateDict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' does not hold a state_dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _hf_meta(config: dict, base: ModelMeta, preproc: dict | None) -> ModelMeta:
    id2label = config.get("id2label") or {}
    names = tuple(str(id2label[k]) for k in sorted(id2label, key=int)) if id2label else base.class_names
    mean = tuple((preproc or {}).get("image_mean", IMAGENET_MEAN))
    std = tuple((preproc or {}).get("image_std", IMAGENET_STD))
    cityscapes = len(names) == 19 and [n.lower() for n in names] == list(CITYSCAPES_CLASSES)
    return replace(
        base,
        num_heads=tuple(config.get("num_attention_heads", NUM_HEADS)),
        class_names=CITYSCAPES_CLASSES if cityscapes else names,
        palette=default_palette(len(names)),
        mean=mean, std=std,
    )


def _check_hf_config(meta: ModelMeta, config: dict, path: Path) -> None:
    for field, key in (("embed_dims", "hidden_sizes"), ("depths", "depths"), ("sr_ratios", "sr_ratios")):
        if key in config and tuple(config[key]) != tuple(getattr(meta, field)):
            raise CheckpointError(
                f"'{path}': config.json says {key}={config[key]} but the weights have {getattr(meta, field)}"
            )


def _find_hf_files(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for an HF directory or a file inside one."""
    directory = path if path.is_dir() else path.parent
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (directory / name).is_file():
                weights = directory / name
                break
        else:
            raise CheckpointError(f"'{path}' is a directory without model.safetensors or pytorch_model.bin")
    else:
        weights = path
    config = directory / "config.json"
    return weights, config if config.is_file() else None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Detect the format of ``path`` and return its tensors in this project's layout with metadata."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file '{path}' not found")
    if path.is_dir() and not (path / "config.json").is_file():
        raise CheckpointError(f"'{path}' is a directory but not a Hugging Face checkpoint (no config.json)")
    weights, config_path = (_find_hf_files(path) if path.is_dir() else (path, None))
    if not path.is_dir() and (path.parent / "config.json").is_file() and path.name in (
            "model.safetensors", "pytorch_model.bin"):
        weights, config_path = _find_hf_files(path)
    if weights.stat().st_size == 0:
        raise CheckpointError(f"'{weights}' is empty")

    header: dict[str, str] = {}
    if weights.suffix == ".safetensors":
        sd, header = _read_safetensors(weights)
    else:
        sd = _tensor_dict(_torch_load(weights), weights)

    if META_KEY in header:
        try:
            meta = ModelMeta.from_json(header[META_KEY])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"'{weights}' has unreadable segformer3d-rt metadata ({e})") from None
        return Checkpoint("segformer3d-rt", meta, {k: v.float() if v.is_floating_point() else v
                                                   for k, v in sd.items()})

    keys = list(sd)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    if config_path is not None or any(k.startswith(("segformer.encoder.", "encoder.patch_embeddings.")) for k in keys):
        config = json.loads(config_path.read_text()) if config_path else {}
        preproc_path = weights.parent / "preprocessor_config.json"
        preproc = json.loads(preproc_path.read_text()) if preproc_path.is_file() else None
        ours = filter_huggingface(sd)
        base = replace(ModelMeta(), depth=None, source_format="huggingface", input_size=(512, 1024))
        meta = infer_meta(ours, _hf_meta(config, base, preproc))
        _check_hf_config(meta, config, path)
        return Checkpoint("huggingface", meta, ours, encoder_only="seg_head.pred.weight" not in ours)
    if any(k.startswith("backbone.stages.") for k in keys):
        ours = filter_segformer3d(sd)
        base = replace(
            ModelMeta(), mean=SEGFORMER3D_MEAN, source_format="segformer3d", input_size=(128, 256),
            depth=DepthSpec(kind="inverse", scale=10.0, unit="relative"),
            description="original Segformer3D weights (mean with its 0.56 typo, inverse depth x10)",
        )
        return Checkpoint("segformer3d", infer_meta(ours, base), ours)
    if any(k.startswith("backbone.patch_embed1.") for k in keys):
        ours = filter_nvlabs(sd)
        base = replace(ModelMeta(), depth=None, source_format="nvlabs", input_size=(1024, 2048))
        return Checkpoint("nvlabs", infer_meta(ours, base), ours, encoder_only="seg_head.pred.weight" not in ours)
    if any(k.startswith("patch_embed1.") for k in keys):
        ours = filter_nvlabs(sd)
        base = replace(ModelMeta(), source_format="mit")
        return Checkpoint("mit", infer_meta(ours, base), ours, encoder_only=True)
    shown = ", ".join(keys[:3])
    raise CheckpointError(
        f"'{path}' has an unknown layout (first keys: {shown}); expected a segformer3d-rt, Segformer3D, "
        "NVlabs SegFormer, MiT backbone or Hugging Face checkpoint"
    )


# ----------------------------------------------------------------------------------------------
# Strict loading.

def _short(items: list[str], n: int = 4) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_state_strict(module: torch.nn.Module, sd: StateDict, what: str) -> None:
    """load_state_dict(strict=True), with one readable line naming every kind of mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({_short(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys ({_short(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_short(shapes, 2)})")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(sd, strict=True)


def model_from_checkpoint(ckpt: Checkpoint, path: str | Path) -> SegFormer3D:
    if ckpt.encoder_only:
        raise CheckpointError(
            f"'{path}' holds only an encoder ({ckpt.format}); use it to initialise training "
            "(segformer3d-rt train --init ...), it cannot segment on its own"
        )
    model = SegFormer3D(ckpt.meta)
    load_state_strict(model, ckpt.state_dict, f"'{path}' ({ckpt.format})")
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> SegFormer3D:
    """Any supported checkpoint -> network in eval mode with ``.meta`` attached."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    return model.to(device).eval()


def load_encoder(model: SegFormer3D, path: str | Path) -> str:
    """Initialise only the encoder from any checkpoint (e.g. mit_b0.pth); returns the format found."""
    ckpt = read_checkpoint(path)
    enc = {k[len("encoder."):]: v for k, v in ckpt.state_dict.items() if k.startswith("encoder.")}
    load_state_strict(model.encoder, enc, f"encoder of '{path}' ({ckpt.format})")
    return ckpt.format


def save_checkpoint(model: SegFormer3D, path: str | Path, dtype: torch.dtype | None = None,
                    meta: ModelMeta | None = None) -> Path:
    """Write the project's format: safetensors + metadata. Written to a temp name, then renamed."""
    path = Path(path)
    meta = meta or model.meta
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # serialised in memory and written with open(): the file gets the usual umask permissions
        # (safetensors' save_file creates it 0600, unreadable to other users of shared weights)
        tmp.write_bytes(save(tensors, metadata={META_KEY: meta.to_json(), "format": "segformer3d-rt"}))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write '{path}': {e.strerror or e}") from None
    return path
