"""The network, its metadata and every checkpoint format it loads."""
from .checkpoints import load_encoder, load_model, read_checkpoint, save_checkpoint
from .metadata import DepthSpec, ModelMeta
from .segformer import VARIANTS, SegFormer3D, SegFormerOutput, build_model

__all__ = [
    "VARIANTS", "DepthSpec", "ModelMeta", "SegFormer3D", "SegFormerOutput", "build_model",
    "load_encoder", "load_model", "read_checkpoint", "save_checkpoint",
]
