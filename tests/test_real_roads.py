"""Real streets: CamVid and KITTI readers on the real files, the set loss, eval's grouping, mixed training."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from segformer3d_rt.data.datasets import CamVidDataset, KittiDepthDataset
from segformer3d_rt.data.registry import open_dataset
from segformer3d_rt.errors import UserError
from segformer3d_rt.evaluation.evaluate import evaluate, median_scaled
from segformer3d_rt.runtime.backends import torch_network
from segformer3d_rt.labels import CAMVID, CITYSCAPES_CLASSES, IGNORE
from segformer3d_rt.training.losses import seg_loss, set_loss
from segformer3d_rt.model.metadata import ModelMeta
from segformer3d_rt.training.config import TrainConfig
from segformer3d_rt.training.mix import balanced_weights, sampling_plan
from segformer3d_rt.training.train import train
from conftest import SHARED_DATA

SHARED = SHARED_DATA
CAMVID_DIR = SHARED / "camvid"
KITTI_DIR = SHARED / "depth_samples" / "kitti"
needs_camvid = pytest.mark.skipif(not CAMVID_DIR.is_dir(), reason=f"real CamVid frames not found at {CAMVID_DIR}")
needs_kitti = pytest.mark.skipif(not KITTI_DIR.is_dir(), reason=f"real KITTI frame not found at {KITTI_DIR}")
CS = {n: i for i, n in enumerate(CITYSCAPES_CLASSES)}


# ------------------------------------------------------------------ the label table

def test_every_cityscapes_class_belongs_to_exactly_one_camvid_class():
    m = CAMVID.membership(CITYSCAPES_CLASSES)
    assert m.shape == (11, 19)
    assert (m.sum(0) == 1).all()  # the README's grouping: each of the 19 classes in exactly one group
    lut = CAMVID.group_lut(CITYSCAPES_CLASSES)
    assert [CAMVID.names[lut[CS[c]]] for c in ("truck", "bus", "train", "car")] == ["car"] * 4
    assert [CAMVID.names[lut[CS[c]]] for c in ("rider", "motorcycle", "bicycle")] == ["bicyclist"] * 3
    assert CAMVID.names[lut[CS["terrain"]]] == "tree" and CAMVID.names[lut[CS["wall"]]] == "building"
    assert CAMVID.names[lut[CS["traffic light"]]] == "sign-symbol"


def test_a_model_without_the_classes_cannot_be_grouped():
    with pytest.raises(ValueError, match="no class"):
        CAMVID.membership(tuple(f"class {i}" for i in range(19)))


# ------------------------------------------------------------------ readers on the real files

@needs_camvid
def test_camvid_reader_on_the_real_files():
    train, val = CamVidDataset(CAMVID_DIR, "train"), CamVidDataset(CAMVID_DIR, "val")
    assert (len(train), len(val)) == (367, 101)  # the SegNet split the README describes
    s = val[0]
    assert s.image.shape == (360, 480, 3) and s.image.dtype == np.uint8
    assert s.labels.shape == (360, 480) and s.label_space is CAMVID
    raw = cv2.imread(str(CAMVID_DIR / "valannot" / f"{s.name}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(s.labels == IGNORE, raw == 11)  # void -> ignore, nothing else
    assert np.array_equal(s.labels[raw != 11], raw[raw != 11])  # ids kept as they are
    # pixel shares of the README (train): road 31.7%, sky 16.9%, bicyclist 0.3%
    counts = train.label_histogram()
    share = counts / (counts.sum() / (1 - 0.040))  # the README's shares include 4.0% void
    assert share[3] == pytest.approx(0.317, abs=0.002) and share[0] == pytest.approx(0.169, abs=0.002)
    assert share[10] == pytest.approx(0.003, abs=0.001)


@needs_camvid
def test_camvid_spec_and_split():
    assert len(open_dataset(f"camvid:{CAMVID_DIR},split=train", "val")) == 367
    assert len(open_dataset(f"camvid:{CAMVID_DIR}", "val")) == 101
    with pytest.raises(UserError, match="split"):
        open_dataset(f"camvid:{CAMVID_DIR},split=nope")
    with pytest.raises(UserError, match="unknown camvid dataset option"):
        open_dataset(f"camvid:{CAMVID_DIR},colour=1")


def test_camvid_rejects_bad_label_ids(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    cv2.imwrite(str(tmp_path / "val" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "valannot" / "a.png"), np.full((8, 8), 40, np.uint8))
    with pytest.raises(UserError, match="label id 40"):
        CamVidDataset(tmp_path, "val")[0]


@needs_kitti
def test_kitti_reader_on_the_real_frame():
    data = open_dataset(f"kitti:{KITTI_DIR}")
    assert isinstance(data, KittiDepthDataset) and len(data) == 1
    s = data[0]
    assert s.image.shape == (375, 1242, 3) and s.labels is None
    valid = s.depth > 0
    # SOURCES.md: 17144 valid pixels, 2.61..76.58 m (metres = value / 256)
    assert int(valid.sum()) == 17144
    assert s.depth[valid].min() == pytest.approx(2.61, abs=0.01)
    assert s.depth[valid].max() == pytest.approx(76.58, abs=0.01)


def test_kitti_depth_completion_layout(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "groundtruth_depth").mkdir()
    cv2.imwrite(str(tmp_path / "image" / "d_image_02.png"), np.zeros((4, 6, 3), np.uint8))
    gt = np.zeros((4, 6), np.uint16)
    gt[1, 2] = 256 * 10
    cv2.imwrite(str(tmp_path / "groundtruth_depth" / "d_groundtruth_depth_02.png"), gt)
    s = KittiDepthDataset(tmp_path)[0]
    assert s.depth[1, 2] == 10.0 and (s.depth > 0).sum() == 1


def test_kitti_folder_without_depth_is_one_clear_error(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(UserError, match="no frame with a KITTI depth PNG"):
        KittiDepthDataset(tmp_path)


# ------------------------------------------------------------------ the set loss

def _logits_for(cls: int, h: int = 4, w: int = 4, confidence: float = 30.0) -> torch.Tensor:
    logits = torch.zeros(1, 19, h, w)
    logits[:, cls] = confidence
    return logits


def test_car_pixel_costs_nothing_when_the_model_says_truck():
    m = torch.from_numpy(CAMVID.membership(CITYSCAPES_CLASSES))
    car = torch.full((1, 4, 4), CAMVID.names.index("car"))
    truck_logits = _logits_for(CS["truck"])
    assert set_loss(truck_logits, car, m).item() < 1e-9
    # the same logits against a single-class "car" label would be a large loss
    assert seg_loss(truck_logits, torch.full((1, 4, 4), CS["car"])).item() > 20
    # and "road" is not in the car set: a large loss
    assert set_loss(_logits_for(CS["road"]), car, m).item() > 20


def test_set_loss_is_minus_log_of_the_summed_set_probability():
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 3, 5)
    labels = torch.randint(0, 11, (2, 3, 5))
    labels[0, 0, 0] = IGNORE
    m = torch.from_numpy(CAMVID.membership(CITYSCAPES_CLASSES))
    p = logits.softmax(1)
    expect = []
    for b in range(2):
        for y in range(3):
            for x in range(5):
                lab = int(labels[b, y, x])
                if lab != IGNORE:
                    expect.append(-torch.log(p[b, m[lab], y, x].sum()))
    assert set_loss(logits, labels, m).item() == pytest.approx(torch.stack(expect).mean().item(), rel=1e-5)
    # identity sets are plain cross-entropy
    cs_labels = torch.randint(0, 19, (2, 3, 5))
    eye = torch.eye(19, dtype=torch.bool)
    assert set_loss(logits, cs_labels, eye).item() == pytest.approx(seg_loss(logits, cs_labels).item(), rel=1e-5)


def test_label_weights_raise_rare_classes():
    w = balanced_weights(np.array([900, 90, 10]), 1.0)
    assert w.tolist() == pytest.approx([0.1, 1.0, 9.0])
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0] = 5.0  # predicts class 0 everywhere
    labels = torch.tensor([[[0, 2]]])
    eye = torch.eye(3, dtype=torch.bool)
    plain = set_loss(logits, labels, eye)
    weighted = set_loss(logits, labels, eye, label_weights=w)
    assert weighted > plain  # the wrong, rare pixel dominates


# ------------------------------------------------------------------ eval groups like the README says

class _FixedModel(torch.nn.Module):
    """Returns the same full-resolution logits for any input: a model whose predictions we choose."""

    def __init__(self, classes: np.ndarray) -> None:
        super().__init__()
        self.meta = ModelMeta(input_size=classes.shape, depth=None)
        logits = torch.zeros(1, 19, *classes.shape)
        logits.scatter_(1, torch.from_numpy(classes)[None, None].long(), 10.0)
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(seg_logits=self.logits, depth=None)


def test_eval_grouping_against_a_hand_computed_confusion_matrix(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    h, w = 32, 32
    cv2.imwrite(str(tmp_path / "val" / "f.png"), np.zeros((h, w, 3), np.uint8))
    gt = np.full((h, w), 3, np.uint8)  # road
    pred = np.full((h, w), CS["road"], np.uint8)
    gt[:8] = 8  # car (rows 0-7)
    pred[:4] = CS["truck"]  # rows 0-3: truck -> grouped as car (correct)
    pred[4:8] = CS["road"]  # rows 4-7: road (car missed)
    gt[8:12] = 11  # void: ignored whatever is predicted
    pred[8:12] = CS["sky"]
    pred[12:14] = CS["terrain"]  # rows 12-13: labelled road, predicted terrain -> "tree"
    cv2.imwrite(str(tmp_path / "valannot" / "f.png"), gt)
    result = evaluate(torch_network(_FixedModel(pred), torch.device("cpu"), fold_heads=False), CamVidDataset(tmp_path, "val"))
    iou = dict(zip(result["classes"], result["segmentation"]["iou"]))
    row = w
    # car: TP 4 rows, FN 4 rows (predicted road), FP 0 -> 4/8
    assert iou["car"] == pytest.approx(4 * row / (8 * row))
    # road: GT rows 12-31 (20 rows), TP rows 14-31 (18), FN 2 rows (tree), FP 4 rows (the missed car) -> 18/24
    assert iou["road"] == pytest.approx(18 / 24)
    # tree: FP only -> 0; sky: predicted only where void -> not counted at all (NaN)
    assert iou["tree"] == 0.0 and np.isnan(iou["sky"])
    assert result["label_space"] == "CamVid" and len(result["classes"]) == 11
    assert result["segmentation"]["miou_present"] == pytest.approx((0.5 + 0.75) / 2)


def test_eval_scores_depth_per_predicted_class_by_hand(tmp_path):
    """A KITTI-layout frame: the model is right on the road, twice too far on what it calls vegetation."""
    from segformer3d_rt.model.metadata import DepthSpec

    h, w = 32, 32
    gt = np.zeros((h, w), np.float32)
    gt[16:] = 10.0  # road, 16 rows at 10 m
    gt[8:16] = 20.0  # vegetation, 8 rows at 20 m
    pred_depth = gt.copy()
    pred_depth[8:16] = 40.0  # twice too far
    pred_depth[:8] = 50.0  # no LiDAR there: never scored
    classes = np.full((h, w), CS["road"], np.uint8)
    classes[:16] = CS["vegetation"]

    class WithDepth(_FixedModel):
        def __init__(self) -> None:
            super().__init__(classes)
            self.meta = ModelMeta(input_size=classes.shape, depth=DepthSpec())
            self.register_buffer("raw", torch.from_numpy(np.log(np.maximum(pred_depth, 1e-3)))[None, None])

        def forward(self, x):
            return SimpleNamespace(seg_logits=self.logits, depth=self.raw)

    cv2.imwrite(str(tmp_path / "f.png"), np.zeros((h, w, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "f_sparse_depth_kitti256.png"), (gt * 256).astype(np.uint16))
    result = evaluate(torch_network(WithDepth(), torch.device("cpu"), fold_heads=False), KittiDepthDataset(tmp_path))
    by = result["depth_by_class"]
    assert set(by) == {"road", "vegetation"}
    assert by["road"]["count"] == 16 * w and by["vegetation"]["count"] == 8 * w
    assert by["road"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert by["vegetation"]["abs_rel"] == pytest.approx(1.0, abs=1e-6)
    assert by["vegetation"]["delta1"] == 0.0 and by["road"]["delta1"] == 1.0
    # the whole image's median scale: median(gt) = 10, median(pred) = 10 -> 1; the per-class rows add up
    assert by["road"]["abs_rel_median_scaled"] == pytest.approx(0.0, abs=1e-6)
    whole = result["depth"]["abs_rel"]
    assert whole == pytest.approx((16 * 0.0 + 8 * 1.0) / 24, abs=1e-6)


def test_median_scaling_removes_a_global_scale():
    gt = torch.tensor([[2.0, 4.0], [8.0, 0.0]])
    pred = gt * 3.7
    assert torch.allclose(median_scaled(pred, gt)[gt > 0], gt[gt > 0])


# ------------------------------------------------------------------ mixed training

def test_sampling_plan_follows_weights_and_walks_each_dataset():
    plan = sampling_plan([5, 1000], [1.0, 3.0], steps=400, batch_size=8, seed=0)
    src = np.array([s for batch in plan for s, _ in batch])
    assert len(plan) == 400 and all(len(b) == 8 for b in plan)
    assert (src == 1).mean() == pytest.approx(0.75, abs=0.02)
    small = [i for batch in plan for s, i in batch if s == 0]
    for k in range(0, len(small) - 5, 5):  # every epoch of the small dataset is a permutation of it
        assert sorted(small[k:k + 5]) == [0, 1, 2, 3, 4]
    # step t does not depend on the total number of steps (resume continues exactly)
    assert sampling_plan([5, 1000], [1.0, 3.0], steps=50, batch_size=8, seed=0) == plan[:50]


def test_mixed_training_runs_each_loss_where_its_labels_exist(tmp_path):
    """synthetic (seg + depth) and a CamVid-layout folder (seg only) in one run, different crops."""
    cam = tmp_path / "camvid"
    (cam / "train").mkdir(parents=True)
    (cam / "trainannot").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(cam / "train" / f"{i}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        lab = np.full((48, 64), 3, np.uint8)
        lab[:16] = 0  # sky on top
        lab[30:, :20] = 8
        cv2.imwrite(str(cam / "trainannot" / f"{i}.png"), lab)
    cfg = TrainConfig(data=("synthetic:size=32x64,crop=32x64,scale=1-1,weight=1", f"camvid:{cam},weight=1"),
                      crop=(32, 48), scale=(0.8, 1.2), steps=3, batch_size=4, workers=0, progress="none",
                      out=str(tmp_path / "run"), save_every=100, threads=1, warmup=1)
    final = train(cfg)
    assert final.is_file()
    from segformer3d_rt import load_model
    from segformer3d_rt.training.mix import build_sources

    model = load_model(final)
    assert model.meta.num_classes == 19
    synth, camvid = build_sources(cfg, model.meta.class_names, model.meta.mean, model.meta.std)
    image, labels, depth = synth.data[0]
    assert image.shape[-2:] == (32, 64) and (depth > 0).float().mean() > 0.5  # seg + depth
    assert synth.membership is None and camvid.membership.shape == (11, 19)
    image, labels, depth = camvid.data[0]
    assert image.shape[-2:] == (32, 48)  # its own crop
    # CamVid has no depth: the only depth target is the sky's (--sky-depth), nowhere else
    assert torch.equal(depth[0] > 0, labels == CAMVID.names.index("sky"))


def test_sky_is_taught_as_far():
    from segformer3d_rt.training.mix import TrainSet
    from segformer3d_rt.data.datasets import Sample

    class One(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            lab = np.full((8, 8), 3, np.uint8)
            lab[:3] = 0
            return Sample(np.zeros((8, 8, 3), np.uint8), lab, None, "x", CAMVID)

    ts = TrainSet(One(), (8, 8), 0, False, (0.5,) * 3, (0.25,) * 3, sky_labels=(0,), sky_depth=100.0)
    _, labels, depth = ts[0]
    assert (depth[0][:3] == 100.0).all() and (depth[0][3:] == 0).all()  # only sky gets a target


def test_per_dataset_sky_depth_and_the_runs_input_size(tmp_path):
    from segformer3d_rt import load_model
    from segformer3d_rt.training.mix import build_sources

    cfg = TrainConfig(data=("synthetic:size=32x64,sky=0", "synthetic:size=32x64"), sky_depth=80.0)
    a, b = build_sources(cfg, CITYSCAPES_CLASSES, (0.5,) * 3, (0.25,) * 3)
    assert a.data.sky_depth == 0.0 and b.data.sky_depth == 80.0
    # fine-tuning a full checkpoint keeps its classes and depth units but records this run's input size
    first = train(TrainConfig(data=("synthetic:size=32x64",), crop=(32, 64), steps=1, batch_size=2, workers=0,
                              progress="none", out=str(tmp_path / "a"), threads=1))
    second = train(TrainConfig(data=("synthetic:size=32x64",), crop=(32, 64), steps=1, batch_size=2, workers=0,
                               progress="none", out=str(tmp_path / "b"), threads=1, init=str(first),
                               input_size=(96, 160)))
    assert load_model(first).meta.input_size == (32, 64)
    meta = load_model(second).meta
    assert meta.input_size == (96, 160) and "--steps 1" in meta.description


def test_bad_mix_options_are_one_clear_error(tmp_path):
    for spec, msg in (("synthetic:weight=abc", "weight= wants a number"), ("synthetic:weight=0", "must be > 0"),
                      ("synthetic:scale=2", "scale= wants LOW-HIGH"), ("synthetic:sky=-1", "sky= must be >= 0")):
        cfg = TrainConfig(data=(spec,), steps=1, out=str(tmp_path / "r"), progress="none", workers=0)
        with pytest.raises(UserError, match=msg):
            train(cfg)


# ------------------------------------------------------------------ pop-up depth from labels (relative)

def _kinds():
    from segformer3d_rt.data.popup import label_kinds

    return label_kinds(CAMVID)


def test_popup_depth_by_hand():
    from segformer3d_rt.data.popup import popup_depth

    S, B, R, T, C = (CAMVID.names.index(n) for n in ("sky", "building", "road", "tree", "car"))
    lab = np.full((20, 6), R, np.uint8)
    lab[:10] = S
    lab[6:14, 1] = C  # a car standing on the road at row 13 (its contact is row 14)
    lab[4:6, 1] = T  # a tree seen above the car: no target (it may be anywhere behind)
    lab[8:20, 3] = B  # a wall cut by the frame's bottom edge: no contact, no target
    lab[12:14, 4] = IGNORE  # void between road and object breaks the run
    lab[8:12, 4] = C
    lab[8:12, 5] = B  # a wall on the road
    d = popup_depth(lab, *_kinds(), horizon=0.25, margin=0.0)  # horizon at row 5
    ground = 1.0 / (np.arange(20) + 0.5 - 5.0)
    road = lab == R
    assert np.allclose(d[road], np.broadcast_to(ground[:, None], lab.shape)[road])
    assert np.allclose(d[6:14, 1], ground[14])  # the car: the depth of the road it touches
    assert (d[4:6, 1] == 0).all() and (d[:10][lab[:10] == S] == 0).all()
    assert (d[8:20, 3] == 0).all() and (d[8:14, 4] == 0).all()
    assert np.allclose(d[8:12, 5], ground[12])
    # ground rows near the horizon give no target (nor would objects standing there); the rest is unchanged
    d2 = popup_depth(lab, *_kinds(), horizon=0.25, margin=0.2)  # rows 9 and below are 4+ rows from it
    assert (d2[:9][road[:9]] == 0).all() and np.array_equal(d2[9:], d[9:]) and np.array_equal(d2[:, 1], d[:, 1])


def test_popup_depth_matches_the_exact_ground_of_a_rendered_street():
    """Rendered frames have exact depth and a known horizon: pop-up depth is that depth up to one scale on the
    ground, and close to it on whatever stands on the ground."""
    from segformer3d_rt.data.popup import label_kinds, popup_depth
    from segformer3d_rt.labels import identity_space
    from segformer3d_rt.synthetic import SyntheticWorld

    ground_err, object_err = [], []
    for seed in (3, 5):
        world = SyntheticWorld(seed=seed, height=128, width=256)
        frame, cam = world.render(10), world.camera(10)
        kinds = label_kinds(identity_space(CITYSCAPES_CLASSES))
        # the renderer puts pixel centres at integer rows, popup_depth at half-integer ones
        d = popup_depth(frame.labels, *kinds, horizon=(cam.v_horizon + 0.5) / 128, margin=0.06)
        ok = (d > 0) & (frame.depth > 0)
        on_ground = ok & np.isin(frame.labels, [CS["road"], CS["sidewalk"]])
        scale = np.median(frame.depth[on_ground] / d[on_ground])
        rel = np.abs(d * scale - frame.depth) / np.maximum(frame.depth, 1e-6)
        ground_err.append(rel[on_ground].max())
        object_err.append(np.median(rel[ok & ~on_ground]))
        assert ok[frame.labels == CS["car"]].any() or ok[frame.labels == CS["building"]].any()
    assert max(ground_err) < 1e-3  # exact: 1 / (v - v_h) is the flat ground's depth
    assert max(object_err) < 0.15


@needs_camvid
def test_popup_targets_on_real_camvid_frames_through_training_crops():
    from segformer3d_rt.training.mix import build_sources

    cfg = TrainConfig(data=(f"camvid:{CAMVID_DIR},split=train,sky=0,popup=0.5",), crop=(128, 160), scale=(0.5, 1.0))
    src = build_sources(cfg, CITYSCAPES_CLASSES, (0.5,) * 3, (0.25,) * 3)[0]
    assert src.relative_depth
    covered = []
    for i in (0, 120, 250):
        _, labels, depth = src.data[i]
        d = depth[0]
        assert not (d[labels == CAMVID.names.index("sky")] > 0).any()  # no metric sky target in relative depth
        assert not (d[labels == IGNORE] > 0).any()
        road = (labels == CAMVID.names.index("road")) & (d > 0)
        # down any column, the road only comes nearer
        for col in range(0, 160, 16):
            vals = d[:, col][road[:, col]]
            assert (vals[1:] <= vals[:-1] + 1e-7).all()
        covered.append(float((d > 0).float().mean()))
    assert min(covered) > 0.2  # most of a street frame is road or stands on it


def test_horizon_estimate_by_hand():
    from segformer3d_rt.data.popup import estimate_horizons

    R, S, B = (CAMVID.names.index(n) for n in ("road", "sky", "building"))
    ground = _kinds()[0]
    frames = []
    for i in range(20):  # sequence "a": the road's top row in the central columns is 10 + i
        lab = np.full((40, 8), S, np.uint8)
        lab[10 + i:, 2:6] = R
        lab[5:, :2] = R  # kerbs at the sides reach higher: not the road's far end, not counted
        lab[10 + i:12 + i, 3] = IGNORE  # void in one column does not hide the road beside it
        frames.append((f"a_{i:03d}", lab))
    frames += [(f"b_{i}", np.full((40, 8), B, np.uint8)) for i in range(10)]  # no ground: no estimate
    frames += [(f"c_{i}", np.full((40, 8), R, np.uint8)) for i in range(3)]  # too few frames
    est = estimate_horizons(frames, ground, quantile=5.0)
    assert set(est) == {"a"}
    tops = (10 + np.arange(20) + 0.5) / 40
    assert est["a"] == pytest.approx(np.percentile(tops, 5.0))


def test_horizon_estimate_on_rendered_drives_lands_just_below_the_true_horizon():
    from segformer3d_rt.data.popup import estimate_horizons, label_kinds
    from segformer3d_rt.labels import identity_space
    from segformer3d_rt.synthetic import SyntheticWorld

    ground = label_kinds(identity_space(CITYSCAPES_CLASSES))[0]
    for seed in (100, 105):
        world = SyntheticWorld(seed=seed, height=120, width=160)
        frames = [(f"d_{i}", world.render(i).labels) for i in range(0, 2000, 100)]
        true = np.mean([(world.camera(i).v_horizon + 0.5) / 120 for i in range(0, 2000, 100)])
        # flat ground never rises above the horizon: the estimate is at or below it (a larger row), and close
        assert 0.0 <= estimate_horizons(frames, ground)["d"] - true < 0.04


@needs_camvid
def test_popup_auto_finds_each_camvid_camera_and_uses_it():
    from segformer3d_rt.data.popup import label_kinds, popup_depth
    from segformer3d_rt.training.mix import build_sources

    cfg = TrainConfig(data=(f"camvid:{CAMVID_DIR},split=train,sky=0,popup=auto",), crop=(360, 480), augment=False)
    src = build_sources(cfg, CITYSCAPES_CLASSES, (0.5,) * 3, (0.25,) * 3)[0]
    horizons = src.data.popup[0]
    assert set(horizons) == {"0001TP", "0006R0", "0016E5"}
    # 0001TP's camera looks up: its road runs out near row 220 of 360 (seen in its frames); the others near 175
    assert 0.58 < horizons["0001TP"] < 0.68
    assert all(0.44 < horizons[k] < 0.53 for k in ("0006R0", "0016E5"))
    names = [p.stem for p in src.data.base.images]
    for seq in ("0001TP", "0016E5"):
        i = next(j for j, n in enumerate(names) if n.startswith(seq))
        _, labels, depth = src.data[i]
        raw = src.data.base[i].labels
        expected = popup_depth(raw, *label_kinds(CAMVID), horizon=horizons[seq])
        assert np.allclose(depth[0].numpy(), expected, atol=1e-6)


def test_popup_auto_without_ground_is_one_clear_error(tmp_path):
    from segformer3d_rt.training.mix import build_sources

    root = tmp_path / "cv"
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    for i in range(6):  # all sky: nowhere to put a horizon
        cv2.imwrite(str(root / "train" / f"s_{i}.png"), np.zeros((32, 48, 3), np.uint8))
        cv2.imwrite(str(root / "trainannot" / f"s_{i}.png"), np.zeros((32, 48), np.uint8))
    cfg = TrainConfig(data=(f"camvid:{root},split=train,popup=auto",), crop=(32, 48))
    with pytest.raises(UserError, match="popup=auto found too little ground"):
        build_sources(cfg, CITYSCAPES_CLASSES, (0.5,) * 3, (0.25,) * 3)


def test_scale_invariant_loss_ignores_one_scale_per_image():
    from segformer3d_rt.model.metadata import DepthSpec
    from segformer3d_rt.training.losses import scale_invariant_loss

    spec = DepthSpec()  # log-depth channel
    gt = torch.rand(2, 1, 8, 8) * 20 + 1
    gt[:, :, :2] = 0  # no target there
    pred = gt.clone()
    pred[0] *= 3.0
    pred[1] *= 0.2  # a different scale per image: no cost
    raw = spec.from_depth(pred.clamp_min(1e-3))
    assert scale_invariant_loss(raw, gt, spec).item() < 1e-5
    bent = pred.clone()
    bent[:, :, 4:] *= 2.0  # the structure is wrong: a cost, of about |log 2| on a share of the pixels
    loss = scale_invariant_loss(spec.from_depth(bent.clamp_min(1e-3)), gt, spec).item()
    assert 0.1 < loss < np.log(2.0)
    raw.requires_grad_(True)
    scale_invariant_loss(raw, torch.zeros_like(gt), spec).backward()  # nothing to learn: zero, still a graph
    assert raw.grad.abs().sum() == 0


@pytest.mark.skipif(not (SHARED / "cityscapes_samples").is_dir(), reason="real Cityscapes frame not found")
def test_popup_on_a_dataset_labelled_in_the_models_own_classes(tmp_path):
    """Cityscapes labels are the model's classes (no label space): road and sidewalk are its ground."""
    import shutil

    from segformer3d_rt.training.mix import build_sources

    frame = "frankfurt_000000_000294"
    for folder, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelTrainIds")):
        d = tmp_path / folder / "val" / "frankfurt"
        d.mkdir(parents=True)
        shutil.copy(SHARED / "cityscapes_samples" / f"{frame}_{suffix}.png", d)
    cfg = TrainConfig(data=(f"cityscapes:{tmp_path},split=val,popup=0.5",), crop=(128, 256), augment=False)
    src = build_sources(cfg, CITYSCAPES_CLASSES, (0.5,) * 3, (0.25,) * 3)[0]
    _, labels, depth = src.data[0]
    d = depth[0]
    road = labels == CS["road"]
    assert (d[road & (torch.arange(128)[:, None] > 72)] > 0).all()  # road well below the horizon: a target
    assert not (d[labels == CS["sky"]] > 0).any() and not (d[labels == IGNORE] > 0).any()


def test_bad_popup_option_is_one_clear_error(tmp_path):
    cfg = TrainConfig(data=("synthetic:popup=1.5",), steps=1, out=str(tmp_path / "r"), progress="none", workers=0)
    with pytest.raises(UserError, match="popup= is the horizon"):
        train(cfg)
    # a dataset with depth of its own: pop-up depth would be ignored, so it is refused
    cfg = TrainConfig(data=("synthetic:size=32x64,popup=0.5",), steps=1, out=str(tmp_path / "r"), progress="none",
                      workers=0)
    with pytest.raises(UserError, match="without depth"):
        train(cfg)
