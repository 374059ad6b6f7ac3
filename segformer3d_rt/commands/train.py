"""`train`: both heads (or either) on a mix of datasets; the work is in :mod:`segformer3d_rt.training.train`."""
from __future__ import annotations

from ..training.config import TrainConfig
from ..training.train import train

__all__ = ["TrainConfig", "run_train"]


def run_train(cfg: TrainConfig) -> int:
    final = train(cfg)
    print(f"wrote {final}")
    return 0
