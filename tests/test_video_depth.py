"""Issue 19: the kitti_stereo and video readers, the photometric loss and pose network, training on video,
eval --save / per-image figures, and the flicker measure. Exact cases are checked by hand (a known shift, a known
camera motion from the synthetic world, whose poses and depth are exact); real files where ../shared has them."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from segformer3d_rt.data.kitti_stereo import KittiStereoDataset, read_calib
from segformer3d_rt.data.registry import open_dataset, split_spec
from segformer3d_rt.data.video import DEFAULT_FOV, ClipOptions, VideoTriplets
from segformer3d_rt.errors import UserError
from segformer3d_rt.evaluation.flicker import depth_flicker
from segformer3d_rt.model.posenet import PoseNet, invert, rotation, transform
from segformer3d_rt.synthetic.world import SyntheticWorld
from segformer3d_rt.training.photometric import moving_mask, photometric_error, ssim, triplet_loss, warp

CALIB = ("P2: 721.5377 0 609.5593 44.85728 0 721.5377 172.854 0.2163791 0 0 1 0.002745884\n"
         "P3: 721.5377 0 609.5593 -339.5242 0 721.5377 172.854 2.199936 0 0 1 0.002729905\n")


# ----------------------------------------------------------------------------------------------- kitti_stereo

def test_kitti_stereo_real_folder_depth_from_disparity_agrees_with_its_ground_truth(shared_data):
    root = shared_data / "kitti_stereo"
    every = KittiStereoDataset(root)
    assert len(every) == 15 and len(KittiStereoDataset(root, "train")) == 10 and len(KittiStereoDataset(root, "test")) == 5
    calib = read_calib(root / "train/calib/000002.txt")
    assert calib.fx == pytest.approx(721.5377) and calib.baseline == pytest.approx(0.5327, abs=1e-4)
    # train/ has both: the disparity route (used for test/) must give the stereo ground truth
    from segformer3d_rt.data.datasets import _read_single_channel, read_kitti_depth_png
    from segformer3d_rt.data.kitti_stereo import disparity_to_depth

    gt = read_kitti_depth_png(root / "train/gt_depth/000002.png")
    made = disparity_to_depth(_read_single_channel(root / "train/disparity/000002.png", np.uint16), calib)
    both = (gt > 0) & (made > 0)
    assert both.mean() > 0.5
    assert (np.abs(made[both] - gt[both]) / gt[both]).max() < 2e-3  # both stored to 1/256 of their unit
    sample = KittiStereoDataset(root, "test")[0]
    assert sample.name == "test/000011" and sample.depth.shape == sample.image.shape[:2] == (375, 1242)
    assert 0.3 < (sample.depth > 0).mean() < 0.9 and 2 < np.median(sample.depth[sample.depth > 0]) < 40


def test_kitti_stereo_jpeg_bytes_under_a_png_name_read_as_the_image_they_are(shared_data):
    path = shared_data / "kitti_stereo/train/left/000001.png"
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG file
    ds = KittiStereoDataset(shared_data / "kitti_stereo", "train")
    sample = ds[[i for i, it in enumerate(ds.items) if it[0].name == "000001.png"][0]]
    expected = cv2.cvtColor(cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(sample.image, expected)


def _kitti_folder(root: Path, with_calib: bool = True) -> Path:
    for sub in ("left", "disparity", "calib"):
        (root / sub).mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 255, (40, 120, 3), np.uint8)
    cv2.imwrite(str(root / "left/000001.png"), img)
    cv2.imwrite(str(root / "left/000002.png"), img)  # no depth: named, left out
    disp = np.full((40, 120), 0, np.uint16)
    disp[20:] = 30 * 256  # 30 px disparity -> fx * b / 30 = 12.81 m
    cv2.imwrite(str(root / "disparity/000001.png"), disp)
    if with_calib:
        (root / "calib/000001.txt").write_text(CALIB)
    return root


def test_kitti_stereo_layout_and_errors_on_made_folders(tmp_path):
    ds = KittiStereoDataset(_kitti_folder(tmp_path / "one"))
    assert len(ds) == 1 and ds.without_ground_truth() == ["000002.png"]
    d = ds[0].depth
    assert (d[:20] == 0).all() and d[20:] == pytest.approx(721.5377 * 0.53272 / 30, rel=1e-3)
    with pytest.raises(UserError, match="no frame of .* has depth"):
        KittiStereoDataset(_kitti_folder(tmp_path / "nocalib", with_calib=False))
    with pytest.raises(UserError, match="holds neither left/"):
        KittiStereoDataset(tmp_path)
    with pytest.raises(UserError, match="unknown KITTI stereo split"):
        _kitti_folder(tmp_path / "root" / "train")
        KittiStereoDataset(tmp_path / "root", "val")
    (tmp_path / "one/calib/000001.txt").write_text("P2: 1 2 3\n")
    with pytest.raises(UserError, match="P2 is not 12 numbers"):
        KittiStereoDataset(tmp_path / "one")[0]


# ----------------------------------------------------------------------------------------------- video


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "ultrafast"})
        s.height, s.width, s.pix_fmt = frames[0].shape[0], frames[0].shape[1], "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> tuple[Path, SyntheticWorld]:
    world = SyntheticWorld(seed=11, height=128, width=224, fps=20)
    frames = [world.render(i).image for i in range(12)]
    return write_clip(tmp_path_factory.mktemp("clip") / "drive.mp4", frames), world


def test_video_triplets_crop_resize_intrinsics_and_stride(drive):
    clip, world = drive
    ds = open_dataset(f"video:{clip},size=64x96,crop=8:24:16:16,fov=60")
    assert isinstance(ds, VideoTriplets) and ds.clips[0].stride == 2  # 20 fps -> 2 frames for ~10 a second
    frames, K = ds[0]
    assert frames.shape == (3, 64, 96, 3)
    # the crop is cut from the decoded frame before resizing
    with av.open(str(clip)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    expected = cv2.resize(first[8:128 - 24, 16:224 - 16], (96, 64), interpolation=cv2.INTER_AREA)
    assert np.array_equal(ds.clips[0].frames[0], expected)
    fx = (224 / 2) / math.tan(math.radians(60) / 2)
    assert K[0, 0] == pytest.approx(fx * 96 / 192) and K[1, 1] == pytest.approx(fx * 64 / 96)
    assert K[0, 2] == pytest.approx((112 - 16) * 96 / 192) and K[1, 2] == pytest.approx((64 - 8) * 64 / 96)
    assert [t.centre for t in ds.triplets] == list(range(2, 10))
    # intrinsics in source pixels (integer pixel centres, KITTI's convention); the commas survive the spec
    kind, path, opts = split_spec(f"video:{clip},intrinsics=100,110,111.5,63.5,stride=1")
    assert kind == "video" and opts["intrinsics"] == "100,110,111.5,63.5" and opts["stride"] == "1"
    ds = open_dataset(f"video:{clip},intrinsics=100,110,111.5,63.5,stride=1,size=128x224")
    _, K = ds[0]
    assert np.allclose(K, [[100, 0, 112], [0, 110, 64], [0, 0, 1]]) and len(ds) == 10
    assert ClipOptions.parse({}, "x").fov is None and DEFAULT_FOV == 75.0


def test_video_bad_options_and_a_still_camera_are_one_line(tmp_path, drive):
    clip, _ = drive
    for opts, needle in (("fov=5", "fov= is the horizontal field of view"), ("fov=60,intrinsics=1,1,1,1", "not both"),
                         ("crop=1:2:3", "crop= wants 4 whole numbers"), ("size=100x100", "multiples of 32"),
                         ("stride=0", "stride= is the gap"), ("intrinsics=1,2", "intrinsics= wants fx,fy,cx,cy"),
                         ("crop=0:120:0:0", "leaves"), ("zoom=2", "unknown video dataset option")):
        with pytest.raises(UserError, match=needle):
            open_dataset(f"video:{clip},{opts}")
    still = write_clip(tmp_path / "still.mp4", [np.full((64, 96, 3), 120, np.uint8)] * 6)
    with pytest.raises(UserError, match="no triplet with a moving camera"):
        open_dataset(f"video:{still}")
    with pytest.raises(UserError, match="not found"):
        open_dataset(f"video:{tmp_path / 'nope.mp4'}")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(UserError, match="cannot open video"):
        open_dataset(f"video:{tmp_path / 'junk.mp4'}")


# ----------------------------------------------------------------------------------------------- photometric


def test_ssim_is_one_on_equal_images_and_matches_the_formula_at_a_pixel():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 1, 9, 9, generator=g), torch.rand(1, 1, 9, 9, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones_like(x), atol=1e-5)
    a, b = x[0, 0, 3:6, 3:6].double(), y[0, 0, 3:6, 3:6].double()  # the 3x3 window around (4, 4)
    ma, mb = a.mean(), b.mean()
    va, vb, cov = (a * a).mean() - ma ** 2, (b * b).mean() - mb ** 2, (a * b).mean() - ma * mb
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    assert float(ssim(x, y)[0, 0, 4, 4]) == pytest.approx(float(want), abs=1e-5)


def test_warp_of_a_plane_under_a_sideways_move_is_the_known_shift():
    # a fronto-parallel plane at Z = 10 m, the source camera 0.5 m to the right of the target one: it sees
    # everything fx * 0.5 / 10 = 4 px further left, so target pixel u is source pixel u - 4
    h, w, fx = 24, 40, 80.0
    K = torch.tensor([[[fx, 0, w / 2], [0, fx, h / 2], [0, 0, 1]]])
    texture = torch.rand(1, 3, h, w + 8, generator=torch.Generator().manual_seed(1))
    target, source = texture[..., 4:w + 4], texture[..., 8:w + 8]
    T = transform(torch.zeros(1, 3), torch.tensor([[-0.5, 0.0, 0.0]]))
    warped, valid = warp(source, torch.full((1, 1, h, w), 10.0), K, T)
    assert torch.allclose(warped[..., 4:], target[..., 4:], atol=1e-5)
    assert not valid[..., :4].any() and valid[..., 4:].all()  # the left edge comes from outside the source


def test_true_motion_and_depth_of_the_synthetic_world_explain_the_next_frame():
    world = SyntheticWorld(seed=5, height=96, width=176)
    ft, fs = world.render(40), world.render(43)
    ct, cs = world.camera(40), world.camera(43)
    Rt, Rs = ct.rotation(), cs.rotation()
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = Rs @ Rt.T, Rs @ (ct.position - cs.position)
    K = np.array([[ct.focal, 0, ct.cx + 0.5], [0, ct.focal, ct.cy + 0.5], [0, 0, 1]])
    depth = np.where(ft.depth > 0, ft.depth, 1000.0)
    as_t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    img_t, img_s = (as_t(f.image).permute(2, 0, 1)[None] / 255 for f in (ft, fs))
    static = torch.from_numpy(~np.isin(ft.labels, [11, 12, 13, 14, 15, 17, 18]))[None, None]

    def error(d, TT):
        warped, valid = warp(img_s, as_t(d)[None, None], as_t(K)[None], as_t(TT)[None])
        return float(photometric_error(warped, img_t)[valid & static].mean())

    doubled = T.copy()
    doubled[:3, 3] *= 2
    assert error(depth, T) < 0.75 * error(depth, np.eye(4))  # the true motion explains the frame
    assert error(depth, T) < 0.8 * error(depth * 2, T)  # the wrong depth does not
    assert error(depth * 2, doubled) == pytest.approx(error(depth, T), rel=1e-3)  # scale: depth and motion together


def test_auto_masking_leaves_out_what_does_not_move_and_moving_classes_are_masked():
    frames = torch.rand(2, 1, 3, 16, 24).expand(2, 3, 3, 16, 24).contiguous()  # three identical frames
    K = torch.tensor([[20.0, 0, 12], [0, 20.0, 8], [0, 0, 1]]).expand(2, 3, 3)
    motion = transform(torch.zeros(2, 3), torch.tensor([[0, 0, -0.3]] * 2))
    t = triplet_loss(frames, torch.full((2, 1, 4, 6), 5.0), K, (invert(motion), motion))
    assert t.kept == 0.0 and float(t.loss) == pytest.approx(0.0, abs=1e-3)  # only smoothness of a flat map
    logits = torch.zeros(1, 19, 8, 8)
    logits[0, 13, 2:4, 2:4] = 5.0  # "car" in a 2x2 cell block of the 8x8 map
    from segformer3d_rt.labels import CITYSCAPES_CLASSES

    exact = moving_mask(logits, CITYSCAPES_CLASSES, (32, 32), grow=0)
    up = torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(exact[:, 0], up == 13) and exact[0, 0, 12, 12] and not exact[0, 0, 30, 30]
    grown = moving_mask(logits, CITYSCAPES_CLASSES, (32, 32), grow=2)
    assert torch.equal(grown, torch.nn.functional.max_pool2d(exact.float(), 5, 1, 2) > 0) and grown.sum() > exact.sum()
    assert moving_mask(logits[:, :3], ("road", "sidewalk", "sky"), (32, 32)) is None


def test_pose_network_starts_at_no_motion_and_inverts_exactly():
    net = PoseNet()
    x = torch.rand(2, 3, 32, 48)
    assert torch.allclose(net(x, x.flip(0)), torch.eye(4).expand(2, 4, 4), atol=1e-6)
    R = rotation(torch.tensor([[0.1, -0.2, 0.05]]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    T = transform(torch.tensor([[0.1, -0.2, 0.05]]), torch.tensor([[1.0, 2.0, -3.0]]))
    assert torch.allclose(invert(T) @ T, torch.eye(4)[None], atol=1e-6)


def test_training_on_video_learns_a_pose_and_resumes_exactly(tmp_path, drive):
    from segformer3d_rt.model import build_model, save_checkpoint
    from segformer3d_rt.training.config import TrainConfig
    from segformer3d_rt.training.train import train

    clip, _ = drive
    init = save_checkpoint(build_model("b0"), tmp_path / "init.safetensors")
    # warm-up over all 4 steps: the schedule of a 2-step run is that of a 4-step one, so 2 + 2 resumed = 4
    common = dict(data=(f"video:{clip},size=64x96,weight=2", "synthetic:size=64x96,crop=64x96,scale=1-1"),
                  init=str(init), batch_size=3, workers=0, progress="none", warmup=4, lr=1e-3, pose_warmup=1,
                  seed=5)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), steps=4, **common))
    state = torch.load(tmp_path / "whole/last.state.pt", weights_only=True)
    assert "pose" in state and float(state["pose"]["head.weight"].abs().sum()) > 0  # the pose head learnt
    train(TrainConfig(out=str(tmp_path / "part"), steps=2, **common))
    import shutil

    shutil.copytree(tmp_path / "part", tmp_path / "again")
    resumed = train(TrainConfig(out=str(tmp_path / "part"), steps=4, resume=str(tmp_path / "part"), **common))
    from safetensors.torch import load_file

    a, b = load_file(whole), load_file(resumed)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    # without the pose network's state the resumed run is another run
    part = torch.load(tmp_path / "again/last.state.pt", weights_only=True)
    part.pop("pose")
    torch.save(part, tmp_path / "again/last.state.pt")
    other = train(TrainConfig(out=str(tmp_path / "again"), steps=4, resume=str(tmp_path / "again"), **common))
    c = load_file(other)
    assert max((a[k].float() - c[k].float()).abs().max().item() for k in a) > 1e-4


# ----------------------------------------------------------------------------------------------- eval and flicker


def test_eval_save_writes_a_picture_per_frame_and_per_image_figures(tmp_path, shared_data):
    out = tmp_path / "pictures"
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "eval", "--data",
                        f"kitti_stereo:{shared_data / 'kitti_stereo'},split=test", "--limit", "2", "--backend", "torch",
                        "--input-size", "96x320", "--save", str(out), "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert [p["name"] for p in res["per_image"]] == ["test/000011", "test/000012"]
    assert res["scored"] == {"segmentation": 0, "depth": 2}
    pictures = sorted(out.iterdir())
    assert [p.name for p in pictures] == ["test_000011.png", "test_000012.png"]
    assert cv2.imread(str(pictures[0])).shape == (750, 2484, 3)  # 2 x 2 panels of the 1242x375 frame
    # the whole-set figure is pooled over the images' pixels: it lies between the two images' own figures
    per = [p["depth"]["abs_rel"] for p in res["per_image"]]
    assert min(per) <= res["depth"]["abs_rel"] <= max(per)
    assert sum(p["depth"]["pixels"] for p in res["per_image"]) == res["depth"]["count"]
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "eval", "--data",
                        f"kitti_stereo:{shared_data / 'kitti_stereo'},split=test", "--limit", "1", "--save", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--overwrite" in r.stderr and len(list(out.iterdir())) == 2


def test_eval_refuses_video_and_a_dataset_whose_labels_match_nothing(tmp_path, drive):
    clip, _ = drive
    base = [sys.executable, "-m", "segformer3d_rt", "eval", "--backend", "torch", "--input-size", "64x96"]
    r = subprocess.run(base + ["--data", f"video:{clip}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "video for training" in r.stderr
    root = tmp_path / "camvid"
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(root / "val" / f"{name}.png"), np.zeros((32, 48, 3), np.uint8))
    cv2.imwrite(str(root / "valannot" / "a_L.png"), np.zeros((32, 48), np.uint8))  # named unlike its image
    r = subprocess.run(base + ["--data", f"camvid:{root}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no image of" in r.stderr and "a.png, b.png" in r.stderr
    assert "Traceback" not in r.stderr
    # one of two labelled: scored and counted as one, the other named
    cv2.imwrite(str(root / "valannot" / "a.png"), np.zeros((32, 48), np.uint8))
    r = subprocess.run(base + ["--data", f"camvid:{root}", "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["scored"]["segmentation"] == 1 and res["without_ground_truth"] == ["b"]
    assert "1 of 2 images" in r.stderr and "b.png" in r.stderr


def test_flicker_cancels_smooth_motion_and_measures_jitter():
    cls = np.zeros((4, 5), np.int64)
    smooth = [(cls, np.full((4, 5), 10.0 * 1.05 ** t)) for t in range(8)]  # log depth linear in time
    r = depth_flicker(smooth, [0])
    assert r["flicker"] == pytest.approx(0.0, abs=1e-9) and r["change"] == pytest.approx(math.log(1.05))
    jitter = [(cls, np.full((4, 5), 10.0 * (1.02 if t % 2 else 1.0))) for t in range(8)]
    assert depth_flicker(jitter, [0])["flicker"] == pytest.approx(math.log(1.02), rel=1e-6)
    other = [(np.ones((4, 5), np.int64), d) for _, d in jitter]
    assert depth_flicker(other, [0])["frames"] == 0  # none of the classes asked for: nothing measured
