"""segformer3d-rt: a dual-head SegFormer (segmentation + depth) for real-time video."""
from .model import DepthSpec, ModelMeta, SegFormer3D, SegFormerOutput, build_model, load_model, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "DepthSpec", "ModelMeta", "SegFormer3D", "SegFormerOutput", "__version__", "build_model", "load_model",
    "save_checkpoint",
]
