"""Folded decoder equals the unfolded one; statistics and config behave as documented."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segformer3d_rt import build_model
from segformer3d_rt.pipeline.config import build_config, load_preset
from segformer3d_rt.errors import UserError
from segformer3d_rt.model.folding import fold
from segformer3d_rt.runtime.sizes import model_input_size
from segformer3d_rt.pipeline.stats import PipelineStats, summarise, throughput


def _perturb_bn(model):
    g = torch.Generator().manual_seed(0)
    for head in (model.seg_head, model.depth_head):
        if head is None:
            continue
        bn = head.bn
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
        bn.weight.data.copy_(torch.randn(bn.weight.shape, generator=g) * 0.2 + 1)
        bn.bias.data.copy_(torch.randn(bn.bias.shape, generator=g) * 0.2)


@pytest.mark.parametrize("variant,depth", [("b0", True), ("b1", False)])
def test_folded_heads_equal_reference_heads(variant, depth):
    model = build_model(variant, num_classes=7, depth=depth)
    _perturb_bn(model)
    folded = fold(model)
    x = torch.randn(2, 3, 200, 300)
    with torch.no_grad():
        a, b = model(x), folded(x)
    assert (a.seg_logits - b.seg_logits).abs().max().item() < 1e-4
    if depth:
        assert (a.depth - b.depth).abs().max().item() < 1e-4
    else:
        assert b.depth is None
    # no 4*dim-channel stride-4 tensor: the folded projections output (heads x dim) channels
    assert folded.heads.proj[0].out_channels == model.meta.decoder_dim * (2 if depth else 1)


def test_model_input_size_keeps_aspect_and_multiples_of_32():
    # 1280x720 fitted into 512x1024 is 512x910, rounded to multiples of 32
    assert model_input_size((720, 1280), (512, 1024)) == (512, 896)
    assert model_input_size((720, 1280), (256, 512)) == (256, 448)
    assert model_input_size((375, 1242), (256, 512)) == (160, 512)
    for hw in [(375, 1242), (540, 960), (1080, 1920), (100, 50)]:
        h, w = model_input_size(hw, (512, 1024))
        assert h % 32 == 0 and w % 32 == 0
        assert abs((h / w) / (hw[0] / hw[1]) - 1) < 0.1


def test_summaries_and_throughput():
    s = summarise([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert s["count"] == 100 and s["max"] == pytest.approx(100.0)
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)
    assert throughput([0.0, 0.5, 1.0]) == pytest.approx(2.0)  # (n-1)/span
    assert throughput([1.0]) is None
    st = PipelineStats()
    for i in range(5):
        st.frame_in()
        st.frame_out(t_capture=i * 0.1, t_out=i * 0.1 + 0.05)
    st.drop("capture", 2)
    snap = st.snapshot(source_fps=5.0)
    assert snap["frames"] == {"in": 5, "out": 5, "dropped": 2, "dropped_by_stage": {"capture": 2}}
    assert snap["throughput_fps"] == pytest.approx(10.0)
    assert snap["realtime_factor"] == pytest.approx(2.0)
    assert snap["latency_ms"]["capture_to_output"]["p50"] == pytest.approx(50.0)


def test_presets_load_and_flags_override(tmp_path):
    for name in ("webcam", "dashcam-file", "benchmark"):
        assert load_preset(name)
    cfg = build_config("benchmark", {"source": "x.mp4", "batch_size": 2})
    assert cfg.input_size == (256, 512) and cfg.batch_size == 2 and cfg.hud is False
    bad = tmp_path / "bad.toml"
    bad.write_text("bogus = 1\n")
    with pytest.raises(UserError, match="bogus"):
        build_config(str(bad), {"source": "x"})
    with pytest.raises(UserError, match="not found"):
        build_config("nope", {"source": "x"})
    with pytest.raises(UserError, match="view"):
        build_config(None, {"source": "x", "view": "sideways"})


@pytest.mark.parametrize("src_hw,dst_hw", [((720, 1280), (256, 448)), ((1080, 1920), (256, 448)),
                                           ((721, 1283), (256, 448)), ((720, 1280), (360, 640))])
def test_fast_shrink_matches_area_filter(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> None:
    """The two-step shrink stays within a grey level (mean) of OpenCV's one-step area filter on a real scene."""
    import cv2

    from segformer3d_rt.pipeline.preprocess import shrink
    from segformer3d_rt.synthetic import render_sample

    img = render_sample(3, 360, 640).image
    img = cv2.resize(img, (src_hw[1], src_hw[0]), interpolation=cv2.INTER_CUBIC)
    out = shrink(img, dst_hw)
    ref = cv2.resize(img, (dst_hw[1], dst_hw[0]), interpolation=cv2.INTER_AREA)
    assert out.shape == ref.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() < 1.5, diff.mean()
