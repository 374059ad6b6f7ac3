"""The bundled default: B0 weights trained on the synthetic world, and the sample clip made by the project."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from safetensors import safe_open

from segformer3d_rt import load_model
from segformer3d_rt.data.registry import HELD_OUT_SEED, open_dataset
from segformer3d_rt.evaluation.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "segformer3d-rt-b0-roads.safetensors"
SAMPLE = ROOT / "samples" / "synthetic-drive.mp4"
CARD = ROOT / "weights" / "MODEL_CARD.md"
# the model card's held-out set: scenes rendered with a seed the training recipe never uses
HELD_OUT = f"synthetic:seed={HELD_OUT_SEED},n=200,size=128x256"


def test_bundled_weights_are_small_fp16_with_metadata():
    assert WEIGHTS.stat().st_size <= 10 * 2**20
    with safe_open(str(WEIGHTS), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        meta = f.metadata()
    assert dtypes - {"I64"} == {"F16"}  # every float tensor is fp16; BatchNorm's batch counter stays an integer
    model = load_model(WEIGHTS)
    assert model.meta.variant == "b0" and model.meta.num_classes == 19
    assert model.meta.depth is not None and model.meta.depth.unit == "m"
    assert "segformer3d" in json.dumps(meta).lower()


def test_sample_clip_is_small_and_plays():
    assert SAMPLE.stat().st_size <= 10 * 2**20
    with av.open(str(SAMPLE)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 100


@pytest.fixture(scope="module")
def held_out() -> dict:
    return evaluate(load_model(WEIGHTS), open_dataset(HELD_OUT, "val"), torch.device("cpu"))


def _card_figure(name: str) -> float:
    """The bold figure of a row of MODEL_CARD.md's held-out table."""
    m = re.search(rf"^\| {re.escape(name)}[^|]*\| \*\*([0-9.]+)\*\* \|", CARD.read_text(), re.M)
    assert m, f"MODEL_CARD.md has no figure for {name}"
    return float(m.group(1))


@pytest.mark.slow
def test_model_card_figures_are_what_the_weights_give(held_out):
    """The card's held-out figures are reproduced by evaluating the bundled weights on the same set."""
    seg, depth = held_out["segmentation"], held_out["depth"]
    assert held_out["images"] == 200
    assert _card_figure("mIoU, classes present") == pytest.approx(seg["miou_present"], abs=6e-4)
    assert _card_figure("depth AbsRel") == pytest.approx(depth["abs_rel"], abs=6e-4)
    assert _card_figure("depth delta1") == pytest.approx(depth["delta1"], abs=6e-4)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the bundled weights (50 min of 2-core CPU training) do not reach issue 4's "
                                       "bar yet; see weights/MODEL_CARD.md. Strict: weights that pass must say so.")
def test_held_out_quality_meets_issue_4s_bar(held_out):
    """Issue 4's bar on scenes the recipe never rendered: mIoU (classes present) >= 0.70, AbsRel <= 0.15,
    delta1 >= 0.85."""
    seg, depth = held_out["segmentation"], held_out["depth"]
    assert seg["miou_present"] >= 0.70 and depth["abs_rel"] <= 0.15 and depth["delta1"] >= 0.85


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
