"""Losses against hand-computed values; invalid depth and ignore labels contribute nothing."""
from __future__ import annotations

import math

import pytest
import torch

from segformer3d_rt.training.losses import depth_loss, seg_loss
from segformer3d_rt.model.metadata import DepthSpec


def test_seg_loss_ignores_void_and_matches_hand_value():
    # 2 classes, logits equal everywhere -> CE = ln 2 on every labelled pixel
    logits = torch.zeros(1, 2, 2, 2)
    labels = torch.tensor([[[0, 1], [255, 255]]])
    assert seg_loss(logits, labels).item() == pytest.approx(math.log(2), abs=1e-6)
    # only void: zero, but still differentiable
    logits.requires_grad_(True)
    loss = seg_loss(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0


def test_depth_losses_over_valid_pixels_only():
    spec = DepthSpec(kind="metric", scale=1.0)
    raw = torch.tensor([[[[2.0, 4.0], [100.0, -3.0]]]])  # |raw| is the depth for "metric"
    gt = torch.tensor([[[[1.0, 4.0], [0.0, 0.0]]]])  # only the top row is valid
    assert depth_loss(raw, gt, spec, "l1").item() == pytest.approx(0.5)  # (|2-1| + 0) / 2
    assert depth_loss(raw, gt, spec, "log-l1").item() == pytest.approx(math.log(2) / 2)
    g = torch.tensor([math.log(2), 0.0])
    silog = math.sqrt((g ** 2).mean().item() - 0.85 * g.mean().item() ** 2)
    assert depth_loss(raw, gt, spec, "silog").item() == pytest.approx(silog, rel=1e-4)
    # berHu: |d| <= c is L1; c = 0.2 * max|d| = 0.2 -> 1.0 > c: (1 + 0.04) / 0.4 = 2.6; mean with 0
    assert depth_loss(raw, gt, spec, "berhu").item() == pytest.approx((2.6 + 0.0) / 2)
    assert depth_loss(raw, gt, spec, "mse").item() == pytest.approx(0.5)  # ((2-1)^2 + 0) / 2


def test_depth_specs_roundtrip():
    d = torch.tensor([0.0, 1.0, 5.0, 80.0])
    for spec in (DepthSpec("log"), DepthSpec("metric", 2.0), DepthSpec("inverse", 10.0, "relative")):
        raw = spec.from_depth(d)
        assert raw[0] == 0  # invalid stays invalid
        back = spec.to_depth(raw[1:])
        assert torch.allclose(back, d[1:], rtol=1e-5)
    # the original Segformer3D: raw = 10 x inverse depth
    assert DepthSpec("inverse", 10.0).to_depth(torch.tensor([5.0])).item() == pytest.approx(2.0)
