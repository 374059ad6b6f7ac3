"""Every checkpoint format users bring, read into this project's layout with the metadata it implies.

Formats, tried in this order (one module each, the interface is in common.py):
  segformer3d-rt  project.py      this project's .safetensors with its metadata
  huggingface     huggingface.py  a Hugging Face directory or file (config.json + model.safetensors / .bin)
  segformer3d     segformer3d.py  the original Segformer3D bare state_dict .pt (B3 encoder, two 256-wide heads)
  nvlabs          nvlabs.py       NVlabs SegFormer .pth (``state_dict`` inside; segmentation only)
  mit             mit.py          NVlabs MiT ImageNet backbone (mit_bX.pth): encoder only, for initialisation

Every foreign encoder is renamed to MiT's names and mapped onto timm's pvt_v2 by timm's own
``checkpoint_filter_fn``. Reading is safe: ``torch.load`` only ever runs with ``weights_only=True``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from ...errors import CheckpointError
from . import huggingface, mit, nvlabs, project, segformer3d
from .common import Checkpoint, Format, Source, StateDict

FORMATS: tuple[Format, ...] = (project, huggingface, segformer3d, nvlabs, mit)

__all__ = ["FORMATS", "Checkpoint", "Source", "StateDict", "read_checkpoint"]


# what torch.save writes first: a zip archive (since torch 1.6), or the legacy format's pickled magic number
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")


def _torch_load(path: Path) -> object:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"cannot read '{path}': {e.strerror or e}") from None
    if not head.startswith(_TORCH_MAGICS):  # else torch.load blames "Python objects" for any random bytes
        raise CheckpointError(f"'{path}' is not a checkpoint (corrupt, or an unknown format: neither a PyTorch "
                              "file nor safetensors)")
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


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Detect the format of ``path`` and return its tensors in this project's layout with metadata."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file '{path}' not found")
    weights, config = huggingface.locate(path)  # a directory can only be Hugging Face's
    if weights.stat().st_size == 0:
        raise CheckpointError(f"'{weights}' is empty")
    header: dict[str, str] = {}
    if weights.suffix == ".safetensors":
        sd, header = _read_safetensors(weights)
    else:
        sd = _tensor_dict(_torch_load(weights), weights)
    src = Source(path=path, weights=weights, keys=tuple(sd), header=header, config=config)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    for fmt in FORMATS:
        if fmt.detect(src):
            ours = fmt.filter(sd)
            return Checkpoint(fmt.NAME, fmt.meta(ours, src), ours, encoder_only=fmt.encoder_only(ours))
    shown = ", ".join(src.keys[:3])
    raise CheckpointError(
        f"'{path}' has an unknown layout (first keys: {shown}); expected a segformer3d-rt, Segformer3D, "
        "NVlabs SegFormer, MiT backbone or Hugging Face checkpoint"
    )
