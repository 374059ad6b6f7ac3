"""Segmentation and depth metrics against small cases computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segformer3d_rt.errors import UserError
from segformer3d_rt.evaluation.metrics import DepthMetrics, SegMetrics

# ------------------------------------------------------------------------------------------- segmentation

# 2 x 3 maps, K = 3. Pairs (target, pred) left after dropping the ignored pixel:
# (0,0) (0,1) (1,1) (2,2) (1,5); 5 is out of range, hence wrong.
TARGET = np.array([[0, 0, 1], [2, 255, 1]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [2, 0, 5]], dtype=np.int64)


def test_seg_hand_computed_case():
    m = SegMetrics(3)
    m.update(PRED, TARGET)
    r = m.compute()
    # class 0: TP 1, FP 0 (the pred 0 lies on the ignored pixel), FN 1 -> 1/2
    # class 1: TP 1, FP 1, FN 1 (predicted 5)                           -> 1/3
    # class 2: TP 1, FP 0, FN 0                                          -> 1
    np.testing.assert_allclose(r["iou"], [1 / 2, 1 / 3, 1.0])
    assert r["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert r["miou_present"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert r["pixel_accuracy"] == pytest.approx(3 / 5)
    assert r["pixels"] == 5
    np.testing.assert_array_equal(r["confusion"], [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(r["out_of_range"], [0, 1, 0])


def test_seg_negative_prediction_counts_as_wrong():
    m = SegMetrics(2)
    m.update(np.array([-1, 1]), np.array([0, 1]))
    r = m.compute()
    np.testing.assert_allclose(r["iou"], [0.0, 1.0])  # class 0: TP 0, FN 1
    assert r["pixel_accuracy"] == pytest.approx(0.5)


def test_seg_absent_classes():
    m = SegMetrics(4)
    # class 2 only predicted (IoU 0, not present in GT); class 3 nowhere (IoU undefined)
    m.update(np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1]))
    r = m.compute()
    # class 0: 1/1; class 1: TP 2, FN 1 -> 2/3; class 2: TP 0, FP 1 -> 0; class 3: NaN
    assert r["iou"][:3].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert r["miou_present"] == pytest.approx((1 + 2 / 3) / 2)


def test_seg_all_ignored_or_empty_is_nan():
    m = SegMetrics(3)
    r = m.compute()
    assert math.isnan(r["miou"]) and math.isnan(r["miou_present"]) and math.isnan(r["pixel_accuracy"])
    m.update(np.array([1, 2]), np.array([255, 255]))
    assert m.compute()["pixels"] == 0


def test_seg_custom_ignore_index():
    m = SegMetrics(2, ignore_index=-1)
    m.update(np.array([[0, 1, 1]]), np.array([[0, -1, 1]]))
    r = m.compute()
    np.testing.assert_allclose(r["iou"], [1.0, 1.0])
    assert r["pixels"] == 2


def _reference_iou(pred: np.ndarray, target: np.ndarray, k: int, ignore: int = 255) -> np.ndarray:
    """Independent per-class boolean-mask IoU (slow, obviously correct)."""
    keep = target != ignore
    out = []
    for c in range(k):
        p, t = (pred == c) & keep, (target == c) & keep
        union = (p | t).sum()
        out.append((p & t).sum() / union if union else np.nan)
    return np.array(out)


def test_seg_accumulation_equals_concatenation_and_reference():
    rng = np.random.default_rng(0)
    k = 5
    targets = [rng.integers(0, k, (7, 9)).astype(np.uint8) for _ in range(3)]
    preds = [rng.integers(-1, k + 1, (7, 9)) for _ in range(3)]
    for t in targets:
        t[rng.random(t.shape) < 0.2] = 255
    acc = SegMetrics(k)
    for p, t in zip(preds, targets):
        acc.update(p, t)
    whole = SegMetrics(k)
    whole.update(np.concatenate(preds), np.concatenate(targets))
    a, b = acc.compute(), whole.compute()
    np.testing.assert_array_equal(a["confusion"], b["confusion"])
    np.testing.assert_allclose(a["iou"], b["iou"])
    np.testing.assert_allclose(a["iou"], _reference_iou(np.concatenate(preds), np.concatenate(targets), k))


def test_seg_torch_and_numpy_agree():
    a, b = SegMetrics(3), SegMetrics(3)
    a.update(PRED, TARGET)
    b.update(torch.from_numpy(PRED), torch.from_numpy(TARGET.astype(np.int64)))
    np.testing.assert_array_equal(a.compute()["confusion"], b.compute()["confusion"])
    np.testing.assert_allclose(a.compute()["iou"], b.compute()["iou"])


def test_seg_bad_inputs():
    m = SegMetrics(3)
    with pytest.raises(ValueError):
        m.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(TypeError):
        m.update(np.zeros((2, 3), np.float32), np.zeros((2, 3), int))
    with pytest.raises(UserError, match="class id 7"):
        m.update(np.zeros((1, 2), int), np.array([[0, 7]]))


# ------------------------------------------------------------------------------------------- depth

# Valid pairs (pred, target): (1,2) (6,4) (3,3) (5,4); then invalid targets 0, NaN, inf.
D_PRED = np.array([[1.0, 6.0, 3.0, 5.0], [7.0, 7.0, 7.0, 7.0]], dtype=np.float32)
D_GT = np.array([[2.0, 4.0, 3.0, 4.0], [0.0, np.nan, np.inf, -1.0]], dtype=np.float32)


def test_depth_hand_computed_case():
    m = DepthMetrics()
    m.update(D_PRED, D_GT)
    r = m.compute()
    assert r["count"] == 4
    assert r["abs_rel"] == pytest.approx((1 / 2 + 2 / 4 + 0 + 1 / 4) / 4)        # 0.3125
    assert r["sq_rel"] == pytest.approx((1 / 2 + 4 / 4 + 0 + 1 / 4) / 4)         # 0.4375
    assert r["rmse"] == pytest.approx(math.sqrt((1 + 4 + 0 + 1) / 4))
    logs = [math.log(2.0), math.log(1.5), 0.0, math.log(1.25)]
    assert r["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 4))
    # ratios 2, 1.5, 1, 1.25; thresholds strict: 1.25 is not < 1.25
    assert r["delta1"] == pytest.approx(1 / 4)
    assert r["delta2"] == pytest.approx(3 / 4)   # < 1.5625
    assert r["delta3"] == pytest.approx(3 / 4)   # < 1.953125


def test_depth_max_depth_and_pred_clamp():
    m = DepthMetrics(max_depth=3.5)
    m.update(D_PRED, D_GT)  # only targets 2 and 3 remain
    r = m.compute()
    assert r["count"] == 2
    assert r["abs_rel"] == pytest.approx((1 / 2 + 0) / 2)
    m = DepthMetrics(min_depth=0.5)
    m.update(np.array([0.0, -3.0]), np.array([1.0, 0.4]))  # pred 0 -> 0.5; target 0.4 is invalid
    r = m.compute()
    assert r["count"] == 1
    assert r["abs_rel"] == pytest.approx(0.5)
    assert r["delta1"] == 0.0 and r["delta3"] == 0.0  # ratio 2 > 1.25 ** 3


def test_depth_accumulation_equals_concatenation():
    rng = np.random.default_rng(1)
    gts = [rng.uniform(0.5, 50, (6, 8)) * (rng.random((6, 8)) > 0.3) for _ in range(3)]
    preds = [g * rng.uniform(0.7, 1.4, g.shape) + 0.1 for g in gts]
    acc, whole = DepthMetrics(max_depth=40.0), DepthMetrics(max_depth=40.0)
    for p, g in zip(preds, gts):
        acc.update(p, g)
    whole.update(np.concatenate(preds), np.concatenate(gts))
    a, b = acc.compute(), whole.compute()
    assert a["count"] == b["count"] == sum(int(((g > 1e-3) & (g <= 40)).sum()) for g in gts)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"):
        assert a[k] == pytest.approx(b[k], rel=1e-12)


def test_depth_torch_and_numpy_agree():
    a, b = DepthMetrics(), DepthMetrics()
    a.update(D_PRED, D_GT)
    b.update(torch.from_numpy(D_PRED), torch.from_numpy(D_GT))
    assert a.compute() == pytest.approx(b.compute())


def test_depth_no_valid_pixel():
    m = DepthMetrics()
    m.update(np.ones((2, 2)), np.zeros((2, 2)))
    r = m.compute()
    assert r["count"] == 0 and math.isnan(r["abs_rel"])
    with pytest.raises(ValueError):
        m.update(np.ones((2, 2)), np.ones((2, 3)))
