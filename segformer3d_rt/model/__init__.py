"""The network, its metadata and every checkpoint format it loads."""
from .checkpoints import Checkpoint, load_encoder, load_model, load_state_strict, read_checkpoint, save_checkpoint
from .metadata import DepthSpec, ModelMeta
from .segformer import SegFormer3D, SegFormerOutput, build_model
from .variants import VARIANTS

__all__ = [
    "VARIANTS", "Checkpoint", "DepthSpec", "ModelMeta", "SegFormer3D", "SegFormerOutput", "build_model",
    "load_encoder", "load_model", "load_state_strict", "read_checkpoint", "save_checkpoint",
]
