"""The exported-network backends: choice (auto), parity with torch, the on-disk cache, the bf16 decision, the
pipeline's engine and `eval` through each backend; TensorRT build and parity on a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segformer3d_rt import build_model, load_model, save_checkpoint
from segformer3d_rt.errors import UserError
from segformer3d_rt.model.folding import fold
from segformer3d_rt.pipeline.infer import InferenceEngine
from segformer3d_rt.runtime.backends import open_backend, resolve_backend, torch_network
from segformer3d_rt.runtime.backends.fidelity import BF16_MAX_DEPTH_REL, BF16_MIN_ARGMAX, check_input, compare

SIZE = (64, 128)
CPU = torch.device("cpu")
CITYSCAPES = "cityscapes_samples/frankfurt_000000_000294_leftImg8bit.png"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("b0")
    m.meta = m.meta.with_(input_size=SIZE)
    return m


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "b0.safetensors")


def test_auto_picks_openvino_on_cpu_torch_on_cuda_tensorrt_for_engines():
    cuda = torch.device("cuda")
    assert resolve_backend("auto", "w.safetensors", CPU) == "openvino"
    assert resolve_backend("auto", "m.onnx", CPU) == "openvino"
    assert resolve_backend("auto", "m.xml", CPU) == "openvino"
    assert resolve_backend("auto", "w.safetensors", cuda) == "torch"
    assert resolve_backend("auto", "m.engine", cuda) == "tensorrt"
    assert resolve_backend("auto", "m.onnx", cuda) == "tensorrt"
    assert resolve_backend("onnxruntime", "m.onnx", CPU) == "onnxruntime"
    for name, weights, device, needle in [
        ("torch", "m.onnx", CPU, "needs a checkpoint"), ("onnxruntime", "m.xml", CPU, "run by openvino"),
        ("openvino", "w.pt", cuda, "runs on the CPU"), ("tensorrt", "w.pt", CPU, "runs on CUDA"),
        ("turbo", "w.pt", CPU, "unknown backend"), ("openvino", "m.engine", CPU, "run by tensorrt"),
    ]:
        with pytest.raises(UserError, match=needle):
            resolve_backend(name, weights, device)


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_fp32_backends_match_torch_within_1e4(model, name, tmp_path):
    backend = open_backend(name, model, CPU, "fp32", SIZE, root=tmp_path)
    assert backend.name == name and backend.precision == "fp32" and backend.startup_s > 0
    assert backend.meta == model.meta
    net = fold(model)
    for batch, size in ((1, SIZE), (2, (96, 160))):  # a checkpoint's export runs every size as it is
        x = check_input(model.meta, size, batch)
        with torch.no_grad():
            ref = net(x)
        out = backend(x)
        assert out.seg_logits.shape == ref.seg_logits.shape and out.depth.shape == ref.depth.shape
        fid = compare(ref, out, model.meta)
        assert fid.max_abs_seg < 1e-4 and fid.max_abs_depth < 1e-4 and fid.argmax_agreement == 1.0


def test_backends_match_torch_on_a_real_frame(shared_data, tmp_path):
    import cv2

    torch.manual_seed(1)
    m = build_model("b0")
    image = cv2.cvtColor(cv2.imread(str(shared_data / CITYSCAPES)), cv2.COLOR_BGR2RGB)  # 256x128 Cityscapes frame
    x = check_input(m.meta, (128, 256), image=image)
    with torch.no_grad():
        ref = fold(m)(x)
    for name in ("openvino", "onnxruntime"):
        fid = compare(ref, open_backend(name, m, CPU, "fp32", (128, 256), root=tmp_path)(x), m.meta)
        assert fid.max_abs_seg < 1e-4 and fid.argmax_agreement == 1.0 and fid.depth_rel < 1e-4


def test_openvino_cache_makes_the_second_start_faster(model, tmp_path):
    first = open_backend("openvino", model, CPU, "fp32", SIZE, root=tmp_path)
    folder = tmp_path / "openvino"
    irs = list(folder.glob("*.xml"))
    assert len(irs) == 1 and irs[0].with_suffix(".bin").is_file() and any((folder / "blobs").iterdir())
    t0 = time.perf_counter()
    second = open_backend("openvino", model, CPU, "fp32", SIZE, root=tmp_path)
    assert time.perf_counter() - t0 < first.startup_s  # no export, no compile: read from the cache
    x = check_input(model.meta, SIZE)
    assert torch.equal(first(x).seg_logits, second(x).seg_logits)


def test_cache_dir_follows_the_environment(model, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGFORMER3D_RT_CACHE", str(tmp_path / "elsewhere"))
    open_backend("openvino", model, CPU, "fp32", SIZE)
    assert list((tmp_path / "elsewhere" / "openvino").glob("*.xml"))


def test_bf16_decision_says_which_and_why(model, tmp_path):
    from segformer3d_rt.runtime.backends.openvino import has_bf16

    auto = open_backend("openvino", model, CPU, "auto", SIZE, root=tmp_path)
    assert auto.precision in ("fp32", "bf16") and auto.note
    if not has_bf16():
        assert auto.precision == "fp32" and "no bf16" in auto.note
        return
    # the decision is bf16 against fp32 on the check frame, with the thresholds, and it is cached
    records = list((tmp_path / "openvino").glob("*.bf16-64x128.json"))
    assert len(records) == 1
    fid = json.loads(records[0].read_text())
    passes = fid["argmax_agreement"] >= BF16_MIN_ARGMAX and fid["depth_rel"] <= BF16_MAX_DEPTH_REL
    assert auto.precision == ("bf16" if passes else "fp32")
    assert (f"{fid['argmax_agreement'] * 100:.2f}%") in auto.note
    forced = open_backend("openvino", model, CPU, "bf16", SIZE, root=tmp_path)
    assert forced.precision == "bf16" and forced.note == "asked for"
    fid = compare(open_backend("openvino", model, CPU, "fp32", SIZE, root=tmp_path)(check_input(model.meta, SIZE)),
                  forced(check_input(model.meta, SIZE)), model.meta)
    assert 0.9 < fid.argmax_agreement <= 1.0 and fid.max_abs_seg > 0  # bf16 really runs


def test_onnxruntime_refuses_bf16(model):
    with pytest.raises(UserError, match="openvino for bf16"):
        open_backend("onnxruntime", model, CPU, "bf16", SIZE)


def test_engine_calls_the_backend_and_agrees_with_torch(model, tmp_path):
    frames = torch.from_numpy(np.stack([np.asarray(np.random.default_rng(i).integers(0, 255, (*SIZE, 3)),
                                                   dtype=np.uint8) for i in range(2)]))
    torch_engine = InferenceEngine(torch_network(model, CPU, "fp32"))
    backend = open_backend("openvino", model, CPU, "fp32", SIZE, root=tmp_path)
    engine = InferenceEngine(backend)  # the same engine for both: it asks the network only what Network declares
    assert engine.network is backend and not engine.cuda_graphs and engine.device == CPU
    a, b = torch_engine(frames), engine(frames)
    assert a.classes.shape == b.classes.shape == (2, *SIZE)
    assert (a.classes == b.classes).float().mean() > 0.999
    assert torch.allclose(a.depth, b.depth, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="torch backend"):
        InferenceEngine(backend, cuda_graphs=True)


def test_fixed_size_export_resizes_other_inputs(model, tmp_path):
    from segformer3d_rt.model.export import export_onnx, save_onnx

    path = save_onnx(export_onnx(model, SIZE, dynamic=False), tmp_path / "fixed.onnx")
    backend = open_backend("onnxruntime", path, CPU)
    out = backend(check_input(model.meta, (96, 160)))
    assert out.seg_logits.shape[2:] == (SIZE[0] // 4, SIZE[1] // 4)  # the export's own size


def _eval(weights: Path, backend: str, tmp_path: Path, data: str, *extra: str) -> dict:
    out = tmp_path / f"eval-{backend}-{Path(weights).suffix[1:]}.json"
    env = {**os.environ, "SEGFORMER3D_RT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "eval", "--weights", str(weights), "--data", data,
                        "--backend", backend, "--device", "cpu", "--json", str(out), *extra],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_eval_with_each_backend_agrees_with_torch(weights, tmp_path):
    data = "synthetic:n=3,size=64x128"
    ref = _eval(weights, "torch", tmp_path, data)
    assert ref["backend"] == "torch"
    for backend in ("openvino", "onnxruntime"):
        got = _eval(weights, backend, tmp_path, data)
        assert got["backend"] == backend and got["precision"] == "fp32"
        assert got["segmentation"]["miou"] == pytest.approx(ref["segmentation"]["miou"], abs=1e-3)
        assert got["segmentation"]["pixel_accuracy"] == pytest.approx(ref["segmentation"]["pixel_accuracy"],
                                                                      abs=1e-3)
        assert got["depth"]["abs_rel"] == pytest.approx(ref["depth"]["abs_rel"], rel=1e-4)


def test_eval_of_an_exported_file_on_real_frames_agrees_with_its_checkpoint(tmp_path, shared_data):
    """The bundled weights on two real CamVid frames: torch, and the same weights exported to ONNX."""
    from segformer3d_rt.model.export import export_onnx, save_onnx
    from segformer3d_rt.runtime.bundled import bundled_weights

    weights = bundled_weights()
    onnx_file = save_onnx(export_onnx(load_model(weights), (128, 160), dynamic=True), tmp_path / "roads.onnx")
    data = f"camvid:{shared_data / 'camvid'},split=val"
    extra = ("--limit", "2", "--input-size", "128x160")
    ref = _eval(weights, "torch", tmp_path, data, *extra)
    for backend in ("openvino", "onnxruntime"):
        got = _eval(onnx_file, backend, tmp_path, data, *extra)
        assert got["segmentation"]["miou"] == pytest.approx(ref["segmentation"]["miou"], abs=1e-3)
        assert got["segmentation"]["pixel_accuracy"] == pytest.approx(ref["segmentation"]["pixel_accuracy"],
                                                                      abs=1e-3)


def test_run_reports_its_backend(weights, tmp_path):
    env = {**os.environ, "SEGFORMER3D_RT_CACHE": str(tmp_path / "cache")}
    for backend in ("torch", "onnxruntime"):
        stats = tmp_path / f"{backend}.json"
        r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", "synthetic:frames=3,size=64x128",
                            "--weights", str(weights), "--backend", backend, "--progress", "none", "--stats-json",
                            str(stats)], capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr
        rep = json.loads(stats.read_text())
        assert rep["frames"]["out"] == 3 and rep["model"]["backend"] == backend
        if backend != "torch":
            assert f"backend {backend} on cpu, fp32" in r.stderr and rep["model"]["startup_s"] > 0


@pytest.mark.cuda
def test_tensorrt_engine_round_trip_fp16_parity(tmp_path, shared_data):
    """The bundled (trained) weights built into an fp16 engine and checked on a real Cityscapes frame: the export's
    own check passes (exit 0, not 1), and the engine matches torch fp32 within fp16 rounding, on that frame
    (batch 2) and on another size inside the dynamic box."""
    pytest.importorskip("tensorrt")
    import cv2

    from segformer3d_rt.runtime.bundled import bundled_weights

    env = {**os.environ, "SEGFORMER3D_RT_CACHE": str(tmp_path / "cache")}
    weights, frame, box = bundled_weights(), shared_data / CITYSCAPES, (128, 256)
    engine = tmp_path / "roads.engine"
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "export", str(weights), "--format", "tensorrt",
                        "-o", str(engine), "--dynamic", "--input-size", "128x256", "--check-image", str(frame)],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)  # 1 would be: beyond the thresholds against torch
    assert "check against torch (tensorrt fp16, the given image at 128x256)" in r.stdout and engine.is_file()
    model = load_model(weights)
    backend = open_backend("tensorrt", engine, torch.device("cuda"))
    assert backend.meta == model.meta.with_(input_size=box) and backend.precision == "fp16"
    image = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB)  # 256x128: the box's size
    net = fold(model)
    for x in (check_input(model.meta, box, 2, image=image), check_input(model.meta, (96, 160))):
        with torch.no_grad():
            ref = net(x)
        fid = compare(ref, backend(x.cuda()), model.meta)
        # fp16 (LayerNorm and softmax fp32) of these weights in ONNX Runtime on the CPU: max |diff| 0.006 seg,
        # 0.0006 depth, agreement 100%, depth 0.012%; TensorRT's kernels may round differently, not 10x worse
        assert fid.argmax_agreement >= BF16_MIN_ARGMAX and fid.depth_rel <= BF16_MAX_DEPTH_REL / 10, fid
        assert fid.max_abs_seg < 0.05 and fid.max_abs_depth < 0.005, fid


@pytest.mark.cuda
def test_tensorrt_runs_on_the_callers_stream_and_caches_per_batch_profile(model, tmp_path):
    """On a side stream the engine's outputs are ordered on that stream (same values as on the default
    stream, read after only that stream's sync); an engine for batch 4 is its own cache file; bf16 is refused."""
    pytest.importorskip("tensorrt")
    cuda = torch.device("cuda")
    one = open_backend("tensorrt", model, cuda, "fp32", (64, 128), tmp_path, batch=1)
    four = open_backend("tensorrt", model, cuda, "fp32", (64, 128), tmp_path, batch=4)
    assert len(list((tmp_path / "tensorrt").glob("*.engine"))) == 2
    x = torch.randn(3, 3, 64, 128, device=cuda)
    ref = one(x)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        side.wait_stream(torch.cuda.current_stream())
        out = four(x)
        seg = out.seg_logits * 1  # work queued on the side stream after the engine's
    side.synchronize()
    torch.testing.assert_close(seg, ref.seg_logits, atol=1e-3, rtol=1e-3)
    assert out.seg_logits.dtype == torch.float32
    with pytest.raises(UserError, match="not bf16"):
        open_backend("tensorrt", model, cuda, "bf16", (64, 128), tmp_path)
