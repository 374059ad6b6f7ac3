"""The bundled default: B0 weights trained on the synthetic world and CamVid, and the sample clip made by the
project. The slow tests reproduce MODEL_CARD.md's figures from the shipped file, on the real frames."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from safetensors import safe_open

from segformer3d_rt import load_model
from segformer3d_rt.data.registry import HELD_OUT_SEED, open_dataset
from segformer3d_rt.evaluation.evaluate import evaluate
from segformer3d_rt.labels import SKY
from segformer3d_rt.runtime.backends import torch_network

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "segformer3d-rt-b0-roads.safetensors"
SAMPLE = ROOT / "samples" / "synthetic-drive.mp4"
CARD = ROOT / "weights" / "MODEL_CARD.md"
SHARED = SHARED_DATA
CAMVID = SHARED / "camvid"
KITTI = SHARED / "depth_samples" / "kitti"
DASHCAM = SHARED / "videos" / "project_video_short_1280x720.mp4"
# the model card's held-out set: scenes rendered with a seed the training recipe never uses
HELD_OUT = f"synthetic:seed={HELD_OUT_SEED},n=200,size=128x256"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real test data not found at {SHARED}")


def test_bundled_weights_are_small_fp16_with_metadata():
    assert WEIGHTS.stat().st_size <= 10 * 2**20
    with safe_open(str(WEIGHTS), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        meta = f.metadata()
    assert dtypes - {"I64"} == {"F16"}  # every float tensor is fp16; BatchNorm's batch counter stays an integer
    model = load_model(WEIGHTS)
    assert model.meta.variant == "b0" and model.meta.num_classes == 19
    assert model.meta.depth is not None and model.meta.depth.unit == "m"
    assert model.meta.input_size == (288, 512)
    assert "camvid" in json.dumps(meta).lower()  # the description names the data (and so its terms)


def test_sample_clip_is_small_and_plays():
    assert SAMPLE.stat().st_size <= 10 * 2**20
    with av.open(str(SAMPLE)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 100


def _card(row: str) -> float:
    """The bold figure of a row of one of MODEL_CARD.md's tables."""
    m = re.search(rf"^\| {re.escape(row)} [^\n]*?\*\*([0-9.]+)\*\*", CARD.read_text(), re.M)
    assert m, f"MODEL_CARD.md has no bold figure for '{row}'"
    return float(m.group(1))


@pytest.fixture(scope="module")
def camvid_val() -> dict:
    return evaluate(torch_network(load_model(WEIGHTS), torch.device("cpu")), open_dataset(f"camvid:{CAMVID},split=val"))


@pytest.fixture(scope="module")
def held_out() -> dict:  # at the checkpoint's input box, as the model card's figures
    return evaluate(torch_network(load_model(WEIGHTS), torch.device("cpu")), open_dataset(HELD_OUT, "val"))


@pytest.fixture(scope="module")
def kitti() -> dict:
    return evaluate(torch_network(load_model(WEIGHTS), torch.device("cpu")), open_dataset(f"kitti:{KITTI}"))


@pytest.mark.slow
@needs_shared
def test_model_card_camvid_val_figure_is_what_the_weights_give(camvid_val):
    assert camvid_val["images"] == 101 and camvid_val["label_space"] == "CamVid"
    assert _card("CamVid val mIoU (11 classes)") == pytest.approx(camvid_val["segmentation"]["miou"], abs=6e-4)


@pytest.mark.slow
def test_model_card_held_out_figures_are_what_the_weights_give(held_out):
    seg, depth = held_out["segmentation"], held_out["depth"]
    assert held_out["images"] == 200
    assert _card("mIoU, classes present (17 of 19)") == pytest.approx(seg["miou_present"], abs=6e-4)
    assert _card("depth AbsRel") == pytest.approx(depth["abs_rel"], abs=6e-4)
    assert _card("depth delta1") == pytest.approx(depth["delta1"], abs=6e-4)


@pytest.mark.slow
@needs_shared
def test_model_card_kitti_figure_is_what_the_weights_give(kitti):
    assert _card("median-scaled") == pytest.approx(kitti["depth_median_scaled"]["abs_rel"], abs=6e-4)


def _dashcam_outputs() -> list[tuple[np.ndarray, np.ndarray]]:
    """The model card's script's own forward pass (scripts/dashcam_depth_figures.py): the same frames and outputs."""
    import importlib.util

    path = ROOT / "scripts" / "dashcam_depth_figures.py"
    spec = importlib.util.spec_from_file_location("dashcam_depth_figures", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.dashcam_outputs(str(WEIGHTS), str(DASHCAM))


@pytest.mark.slow
@pytest.mark.skipif(not DASHCAM.is_file(), reason=f"real dashcam clip not found at {DASHCAM}")
def test_on_the_real_dashcam_sky_is_sky_road_is_near_and_the_sky_is_drawn_far():
    """The complaint that started issue 8: a patch of sky labelled 'truck', the sky drawn as the nearest thing."""
    from segformer3d_rt.labels import CITYSCAPES_PALETTE
    from segformer3d_rt.pipeline.render import RenderStyle, colormap_lut, render_frame

    meta = load_model(WEIGHTS).meta
    style = RenderStyle(palette=np.array(CITYSCAPES_PALETTE, np.uint8), class_names=meta.class_names, view="depth",
                        legend=False, hud=False)
    sky = meta.class_names.index(SKY)
    for classes, depth in _dashcam_outputs():
        h = classes.shape[0]
        top = classes[: h // 5]  # the top fifth of this clip is sky
        assert (top == sky).mean() > 0.5
        assert np.isin(top, [13, 14, 15, 16]).mean() < 0.02  # car, truck, bus, train up in the sky
        # the road in the bottom fifth is nearer than the scene around the horizon (rows 35-50%)
        horizon = depth[int(0.35 * h): h // 2][classes[int(0.35 * h): h // 2] != sky]
        assert np.median(depth[-h // 5:]) < 0.5 * np.median(horizon)
        # what the user sees: every pixel the network calls sky in the depth view has the far colour
        shown = render_frame(np.zeros((h * 4, classes.shape[1] * 4, 3), np.uint8),
                             np.kron(classes, np.ones((4, 4), classes.dtype)).astype(np.uint8), depth, style)
        sky_px = np.kron(classes == sky, np.ones((4, 4), bool))
        assert (shown[sky_px] == colormap_lut("turbo")[0]).all()


def road_profile(classes: np.ndarray, depth: np.ndarray, road: int, band: float = 0.03) -> np.ndarray:
    """Road depth up the middle column: from the bottom row up to where the road ends (the horizon, or whatever
    stands on it), the median depth of the road pixels in the central band (+-3% of the width) of each row."""
    h, w = classes.shape
    c0, c1 = int(w * (0.5 - band)), int(w * (0.5 + band)) + 1
    profile: list[float] = []
    for r in range(h - 1, -1, -1):
        on_road = classes[r, c0:c1] == road
        if on_road.mean() < 0.5:
            if len(profile) > 3:  # the road ended; a few rows of bonnet or a crossing marking below it do not count
                break
            continue
        profile.append(float(np.median(depth[r, c0:c1][on_road])))
    return np.array(profile)


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("clip", sorted(p.name for p in (SHARED / "videos").glob("*.mp4")) or ["none"])
def test_on_real_dashcam_clips_road_depth_rises_from_the_bottom_to_the_horizon(clip):
    """Issue 19's target: up the middle column, every row of road is at least as far as the row below it (2%
    tolerance: the map's own noise at stride 4), and the far end of the road is several times the near end."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashcam_depth_figures", ROOT / "scripts" / "dashcam_depth_figures.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    road = load_model(WEIGHTS).meta.class_names.index("road")
    for classes, depth in script.dashcam_outputs(str(WEIGHTS), str(SHARED / "videos" / clip)):
        p = road_profile(classes, depth, road)
        assert len(p) >= 15, f"{clip}: only {len(p)} rows of road up the middle"
        falls = np.flatnonzero(p[1:] < 0.98 * p[:-1])
        assert falls.size == 0, f"{clip}: road depth falls going up at rows {falls.tolist()}: {np.round(p, 1)}"
        assert p[-1] > 3 * p[0], np.round(p, 1)


@pytest.mark.slow
@needs_shared
def test_issue_8_targets_on_camvid_and_the_synthetic_world(camvid_val, held_out):
    assert camvid_val["segmentation"]["miou"] >= 0.55
    assert held_out["segmentation"]["miou_present"] >= 0.66 and held_out["depth"]["abs_rel"] <= 0.21


@pytest.mark.slow
@needs_shared
@pytest.mark.xfail(strict=True, reason="issue 8's KITTI bar (median-scaled AbsRel 0.457 > 0.25) is not met by "
                                       "the CPU recipe: see weights/MODEL_CARD.md. "
                                       "Strict: weights that pass must say so.")
def test_issue_8_kitti_target(kitti):
    assert kitti["depth_median_scaled"]["abs_rel"] <= 0.25


def test_readme_first_command_runs_the_sample(tmp_path):
    """The README's main command, minus the install: the bundled weights on the bundled clip."""
    out, stats = tmp_path / "annotated.mp4", tmp_path / "stats.json"
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", str(SAMPLE), "-o", str(out),
                        "--stats-json", str(stats), "--progress", "plain", "--max-frames", "40"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads(stats.read_text())
    assert report["frames"]["in"] == report["frames"]["out"] == 40
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 40
