"""The reference `bench --compare transformers` times: Hugging Face's SegformerForSemanticSegmentation of the
same variant (single head: segmentation only), random weights (speed does not depend on them), called the way
its users call it: ``model(pixel_values=x).logits`` (stride-4 logits, as ours)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import UserError
from ..model import ModelMeta
from ..runtime.device import autocast, precision_dtype


def hf_segformer(meta: ModelMeta) -> tuple[torch.nn.Module, str]:
    """(the model in eval mode, transformers' version); a UserError when transformers is not installed."""
    try:
        import transformers
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError:
        raise UserError("--compare transformers needs the transformers package (pip install transformers)") from None
    config = SegformerConfig(
        depths=list(meta.depths), hidden_sizes=list(meta.embed_dims), num_attention_heads=list(meta.num_heads),
        sr_ratios=list(meta.sr_ratios), mlp_ratios=[4] * len(meta.depths), decoder_hidden_size=meta.decoder_dim,
        num_labels=meta.num_classes)
    return SegformerForSemanticSegmentation(config).eval(), transformers.__version__


def hf_forward(model: torch.nn.Module, device: torch.device, precision: str) -> Callable[[torch.Tensor], Any]:
    model = model.to(device)
    dtype = precision_dtype(precision)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            return model(pixel_values=x).logits

    return forward
