"""Where compiled networks are kept between runs, and the digests that name them.

The root is ``$SEGFORMER3D_RT_CACHE`` when set, else ``~/.cache/segformer3d-rt``; each backend has its own folder
(``openvino/``, ``tensorrt/``). A digest names what was compiled (the weights and metadata, or the exported
file's bytes) together with the versions that produced it, so a new torch or OpenVINO never reads a stale file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

CACHE_ENV = "SEGFORMER3D_RT_CACHE"


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "segformer3d-rt"


def cache_dir(backend: str, root: Path | None = None) -> Path:
    """The backend's folder, created when missing. One that cannot be created only means nothing is cached:
    callers treat a failed write there as a miss."""
    path = (root or cache_root()) / backend
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    return path


def model_digest(model: torch.nn.Module, *versions: str) -> str:
    """A digest of a model's tensors and metadata (whatever checkpoint format they came from)."""
    h = hashlib.sha256()
    meta = getattr(model, "meta", None)
    h.update((meta.to_json() if meta is not None else "").encode())
    for v in versions:
        h.update(v.encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def file_digest(*paths: Path, versions: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for v in versions:
        h.update(v.encode())
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]
