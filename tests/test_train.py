"""`train`: determinism, resume, really-frozen parts, checkpoints with metadata, the three dataset layouts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segformer3d_rt.model import load_model, read_checkpoint
from segformer3d_rt.training.config import TrainConfig
from segformer3d_rt.training.train import train

TINY = dict(variant="b0", crop=(64, 128), batch_size=2, workers=0, progress="none", warmup=2, lr=1e-3)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).state_dict


def test_same_seed_same_weights_and_resume_continues_exactly(tmp_path):
    a = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=4, seed=3, **TINY))
    b = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "b"), steps=4, seed=3, **TINY))
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # 2 steps (inside the 2-step warm-up, so the schedule is the same), then resume to 4:
    # the same weights as 4 straight steps
    train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "c"), steps=2, seed=3, **TINY))
    c = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "c"), steps=4, seed=3,
                          resume=str(tmp_path / "c"), **TINY))
    wc = _weights(c)
    diff = max((wa[k].float() - wc[k].float()).abs().max().item() for k in wa)
    assert diff < 1e-5
    # a different seed trains differently
    d = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "d"), steps=4, seed=4, **TINY))
    assert any(not torch.equal(wa[k], _weights(d)[k]) for k in wa)


@pytest.mark.cuda
def test_resume_on_cuda_continues_exactly(tmp_path):
    """The saved RNG state is a CPU tensor; resuming a CUDA run must not move it to the GPU."""
    kw = dict(TINY, device="cuda", amp=False)
    a = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=4, seed=3, **kw))
    train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "c"), steps=2, seed=3, **kw))
    c = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "c"), steps=4, seed=3,
                          resume=str(tmp_path / "c"), **kw))
    wa, wc = _weights(a), _weights(c)
    assert max((wa[k].float() - wc[k].float()).abs().max().item() for k in wa) < 1e-4


def test_depth_head_only_mode_really_freezes_encoder_and_seg_head(tmp_path):
    init = tmp_path / "init"
    start = train(TrainConfig(data="synthetic:size=64x128", out=str(init), steps=1, seed=0, **TINY))
    out = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "f"), steps=3, seed=1,
                            init=str(start), freeze=("encoder", "seg_head"), **TINY))
    before, after = _weights(start), _weights(out)
    for k in before:
        same = torch.equal(before[k], after[k])
        if k.startswith(("encoder.", "seg_head.")):
            assert same, f"{k} changed although frozen"  # includes BatchNorm running statistics
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("depth_head."))
    assert not torch.equal(before["depth_head.bn.running_mean"], after["depth_head.bn.running_mean"])


def test_checkpoint_has_metadata_and_loads(tmp_path):
    out = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "m"), steps=1, seed=0, **TINY))
    model = load_model(out)
    assert model.meta.variant == "b0" and model.meta.class_names[0] == "road"
    assert model.meta.depth is not None and model.meta.depth.unit == "m"
    assert tuple(model.meta.input_size) == (64, 128)
    cfg = json.loads((tmp_path / "m" / "train_config.json").read_text())
    assert cfg["seed"] == 0 and cfg["steps"] == 1


def _write_npy_layout(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(0)
    for sub in ("images", "seg_labels", "depth_labels"):
        (root / sub / "train").mkdir(parents=True)
    for i in range(n):
        np.save(root / "images" / "train" / f"{i}.npy", rng.random((64, 128, 3), dtype=np.float32))
        lab = rng.integers(-1, 19, (64, 128)).astype(np.int64)
        np.save(root / "seg_labels" / "train" / f"{i}.npy", lab)
        np.save(root / "depth_labels" / "train" / f"{i}.npy", rng.random((64, 128, 1), dtype=np.float32) * 0.5)


def test_train_on_npy_and_cityscapes_layouts(tmp_path, shared_data):
    _write_npy_layout(tmp_path / "npy")
    out = train(TrainConfig(data=f"npy:{tmp_path / 'npy'}", out=str(tmp_path / "n"), steps=2, seed=0, **TINY))
    assert out.is_file()
    # the real Cityscapes frame in the official layout
    root = tmp_path / "cs"
    src = shared_data / "cityscapes_samples"
    (root / "leftImg8bit" / "train" / "frankfurt").mkdir(parents=True)
    (root / "gtFine" / "train" / "frankfurt").mkdir(parents=True)
    name = "frankfurt_000000_000294"
    (root / "leftImg8bit" / "train" / "frankfurt" / f"{name}_leftImg8bit.png").write_bytes(
        (src / f"{name}_leftImg8bit.png").read_bytes())
    (root / "gtFine" / "train" / "frankfurt" / f"{name}_gtFine_labelTrainIds.png").write_bytes(
        (src / f"{name}_gtFine_labelTrainIds.png").read_bytes())
    out = train(TrainConfig(data=f"cityscapes:{root}", out=str(tmp_path / "c"), steps=2, seed=0, **TINY))
    assert out.is_file()


def test_cli_train_bad_input_is_one_line():
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "train", "--data", "npy:/does/not/exist",
                        "--steps", "1", "--progress", "none"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1


@pytest.mark.parametrize("loss", ["log-l1", "l1", "berhu", "silog", "mse"])
def test_every_depth_loss_trains(tmp_path, loss):
    out = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / loss), steps=1, seed=0,
                            depth_loss=loss, **TINY))
    assert out.is_file()


def test_a_finished_run_is_never_trained_over(tmp_path):
    from segformer3d_rt.errors import UserError

    first = train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=1, seed=0, **TINY))
    before = first.read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=1, seed=1, **TINY))
    train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "b"), steps=1, seed=0, **TINY))
    with pytest.raises(UserError, match="already holds a run"):  # resuming another run into this one: also not
        train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=2, seed=0,
                          resume=str(tmp_path / "b"), **TINY))
    assert first.read_bytes() == before
    # the run itself, resumed, may continue in its folder
    train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=2, seed=0,
                      resume=str(tmp_path / "a"), **TINY))
    assert torch.load(tmp_path / "a" / "last.state.pt", weights_only=True)["step"] == 2


def test_resuming_with_other_data_is_refused_on_one_line_before_work(tmp_path):
    from segformer3d_rt.errors import UserError

    train(TrainConfig(data="synthetic:size=64x128", out=str(tmp_path / "a"), steps=1, seed=0, **TINY))
    before = (tmp_path / "a" / "last.state.pt").read_bytes()
    with pytest.raises(UserError) as e:  # without the check: a ValueError from the optimiser's state, deep down
        train(TrainConfig(data=("synthetic:size=64x128", "synthetic:seed=9,size=64x128"), out=str(tmp_path / "a"),
                          steps=2, seed=0, resume=str(tmp_path / "a"), **TINY))
    assert str(e.value).startswith(f"--resume {tmp_path / 'a'}: that run was trained with data = ")
    assert "\n" not in str(e.value)
    assert (tmp_path / "a" / "last.state.pt").read_bytes() == before


def test_ctrl_c_saves_the_steps_done_and_resume_continues_from_them(tmp_path):
    from helpers import ctrl_c_after

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "segformer3d_rt", "train", "--data", "synthetic:size=64x128", "--crop", "64x128",
           "--batch-size", "2", "--steps", "100000", "--save-every", "100000", "--log-every", "1",
           "--warmup", "2", "--workers", "1", "--threads", "1", "--progress", "plain", "--out", str(out)]
    code, _, err = ctrl_c_after(cmd, "step 3/")
    assert code == 130, err
    assert "Traceback" not in err and "stopped at step" in err, err
    step = torch.load(out / "last.state.pt", weights_only=True)["step"]
    assert 3 <= step < 100000
    assert load_model(out / "last.safetensors") is not None
    # and the saved state is a real resume point
    train(TrainConfig(data="synthetic:size=64x128", out=str(out), steps=step + 1, seed=0, resume=str(out),
                      **{**TINY, "warmup": 2, "lr": TrainConfig.lr}))  # the command's own learning rate
    assert torch.load(out / "last.state.pt", weights_only=True)["step"] == step + 1
