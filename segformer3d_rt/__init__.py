"""segformer3d-rt: a dual-head SegFormer (segmentation + depth) for real-time video."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "DepthSpec", "ModelMeta", "SegFormer3D", "SegFormerOutput", "__version__", "build_model", "load_model",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from .model import DepthSpec, ModelMeta, SegFormer3D, SegFormerOutput, build_model, load_model, save_checkpoint


def __getattr__(name: str) -> Any:
    # torch is imported on first use, not by `import segformer3d_rt`: the command line starts (and re-executes
    # itself once, see _malloc.py) before paying for it, and `--help` / `--version` stay instant
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
