"""Loading checkpoints strictly into the network, and writing the project's format.

Reading every format users bring (detection, key filters, implied metadata) lives in ``formats/``.
Nothing is loaded partially: any missing, unexpected or mis-shaped tensor is an error that names them.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save

from ..errors import CheckpointError
from .formats import Checkpoint, StateDict, project, read_checkpoint
from .metadata import ModelMeta
from .segformer import SegFormer3D

__all__ = ["Checkpoint", "load_encoder", "load_model", "load_state_strict", "model_from_checkpoint",
           "read_checkpoint", "save_checkpoint"]


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
    _check_head_width(ckpt, path)
    model = SegFormer3D(ckpt.meta)
    load_state_strict(model, ckpt.state_dict, f"'{path}' ({ckpt.format})")
    return model


def _check_head_width(ckpt: Checkpoint, path: str | Path) -> None:
    """The metadata's classes are the segmentation head's outputs (palette and names were checked against each
    other with the schema); a depth spec needs a depth head."""
    pred = ckpt.state_dict.get("seg_head.pred.weight")
    if pred is not None and pred.shape[0] != ckpt.meta.num_classes:
        raise CheckpointError(f"'{path}': its metadata names {ckpt.meta.num_classes} classes (class_names) but "
                              f"the segmentation head has {pred.shape[0]} outputs")
    has_depth = any(k.startswith("depth_head.") for k in ckpt.state_dict)
    if ckpt.meta.depth is not None and not has_depth and ckpt.format == "segformer3d-rt":
        raise CheckpointError(f"'{path}': its metadata describes depth (depth) but the file has no depth head")


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
        tmp.write_bytes(save(tensors, metadata=project.header(meta)))
        tmp.replace(path)
    except OSError as e:
        try:  # on a read-only file system even removing the partial file fails: the first error is the one
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise CheckpointError(f"cannot write '{path}': {e.strerror or e}") from None
    return path
