"""The sparse upsample-argmax must give exactly the dense F.interpolate(...).argmax(1) class map."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segformer3d_rt.pipeline.postprocess import dense_upsample_argmax, upsample_argmax


def _smooth_logits(shape: tuple[int, int, int, int], seed: int) -> torch.Tensor:
    """Blob-like logits (real heads are smooth), so that classes form regions with boundaries."""
    g = torch.Generator().manual_seed(seed)
    b, k, h, w = shape
    coarse = torch.randn(b, k, max(1, h // 3), max(1, w // 3), generator=g) * 4
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) \
        + 0.3 * torch.randn(shape, generator=g)


@pytest.mark.parametrize("shape,size", [
    ((2, 19, 32, 64), (128, 256)),   # stride 4, the pipeline's case
    ((1, 19, 45, 80), (180, 320)),   # sides not multiples of 32
    ((1, 5, 17, 23), (100, 61)),     # non-integer scale factors
    ((1, 3, 1, 1), (5, 5)),          # a single cell
    ((1, 4, 10, 10), (7, 6)),        # shrinking
    ((3, 2, 8, 9), (32, 36)),        # two classes
])
def test_sparse_equals_dense(shape: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    for seed in range(3):
        logits = _smooth_logits(shape, seed)
        fast = upsample_argmax(logits, size)
        dense = dense_upsample_argmax(logits, size)
        assert fast.shape == dense.shape == (shape[0], *size)
        assert fast.dtype == torch.uint8
        assert torch.equal(fast, dense), f"{(fast != dense).sum().item()} pixels differ"


def test_uniform_map_and_fp16_input() -> None:
    logits = torch.zeros(1, 6, 8, 8)
    logits[:, 4] = 1.0
    assert torch.equal(upsample_argmax(logits, (32, 32)), torch.full((1, 32, 32), 4, dtype=torch.uint8))
    half = _smooth_logits((1, 7, 12, 20), 5).half()
    assert torch.equal(upsample_argmax(half, (48, 80)), dense_upsample_argmax(half, (48, 80)))
