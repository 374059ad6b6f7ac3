"""Seed spaces of the procedural world: which sets of scenes training, evaluation and benchmarks draw."""
from __future__ import annotations

# Sample seeds of one synthetic set are seed * STRIDE + index: sets with different seeds never share a scene.
SEED_STRIDE = 10_000_000
TRAIN_SEED = 0
HELD_OUT_SEED = 7  # the model card's held-out set; the training recipe never renders these scenes
