"""The one image normalisation: ``(x - mean) / std`` per channel with the checkpoint's mean/std
(``model.meta.mean`` / ``.std``, given for RGB in [0, 1]).

``scale`` says what range ``x`` is in: 1 for floats in [0, 1], 255 for raw uint8 values (the inference
engine skips the division by folding 255 into mean and std). Works on C x H x W and B x C x H x W tensors.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class Normalizer:
    """Mean and std as tensors on ``device`` (built once), applied by calling it."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None,
                 scale: float = 1.0) -> None:
        self.mean = torch.tensor(tuple(mean), dtype=torch.float32, device=device).view(-1, 1, 1) * scale
        self.std = torch.tensor(tuple(std), dtype=torch.float32, device=device).view(-1, 1, 1) * scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float], scale: float = 1.0) -> torch.Tensor:
    """One-off :class:`Normalizer` on ``x``'s device."""
    return Normalizer(mean, std, x.device, scale)(x)
