"""`segformer3d-rt export`: ONNX and OpenVINO IR round trips (graph, metadata, parity with torch), the fp16 graph,
and bad input as one line with exit 2. TensorRT is built and checked in tests/test_backends.py on a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from segformer3d_rt import build_model, load_model, save_checkpoint
from segformer3d_rt.model.export import DEPTH, SEG, export_onnx, onnx_metadata
from segformer3d_rt.model.folding import fold
from segformer3d_rt.runtime.backends.fidelity import check_input

SIZE = (64, 128)
CITYSCAPES = "cityscapes_samples/frankfurt_000000_000294_leftImg8bit.png"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("b0")
    model.meta = model.meta.with_(input_size=SIZE, description="export test")
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "b0.safetensors")


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGFORMER3D_RT_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "segformer3d_rt", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def ort_run(path_or_bytes, x: torch.Tensor) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x.numpy()})


def test_onnx_graph_opset_layernorm_outputs_and_metadata(weights):
    model = load_model(weights)
    proto = export_onnx(model, SIZE, dynamic=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = Counter(n.op_type for n in proto.graph.node)
    n_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.encoder.modules())
    assert ops["LayerNormalization"] == n_norms  # each LayerNorm one op, not ReduceMean/Sub/Pow/Sqrt chains
    assert "ReduceMean" not in ops
    assert [o.name for o in proto.graph.output] == [SEG, DEPTH]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta, info = onnx_metadata(proto, "test")
    assert meta == model.meta and info.input_size == SIZE and info.dynamic


def test_onnx_matches_torch_at_other_sizes_and_batches(weights):
    model = load_model(weights)
    proto = export_onnx(model, SIZE, dynamic=True).SerializeToString()
    net = fold(model)
    for batch, size in ((1, SIZE), (2, (96, 160))):
        x = check_input(model.meta, size, batch)
        seg, depth = ort_run(proto, x)
        with torch.no_grad():
            ref = net(x)
        assert seg.shape == (batch, 19, size[0] // 4, size[1] // 4)
        assert np.abs(seg - ref.seg_logits.numpy()).max() < 1e-4
        assert np.abs(depth - ref.depth.numpy()).max() < 1e-4


def test_fixed_size_export_declares_its_size_and_keeps_the_batch_dynamic(weights):
    proto = export_onnx(load_model(weights), SIZE, dynamic=False)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, *SIZE]
    x = check_input(load_model(weights).meta, SIZE, 3)
    assert ort_run(proto.SerializeToString(), x)[0].shape[0] == 3


def test_fp16_graph_keeps_layernorm_and_softmax_fp32_and_float32_io(weights):
    from onnx import TensorProto

    model = load_model(weights)
    proto = export_onnx(model, SIZE, dynamic=True, precision="fp16")
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    kept = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert len(kept) >= 30
    for n in kept:
        assert all(types[i] == TensorProto.FLOAT for i in n.input if i), n.name
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "MatMul")]
    assert all(types[n.input[0]] == TensorProto.FLOAT16 for n in convs)  # the heavy ops do run in fp16
    assert {types[v.name] for v in proto.graph.input} == {types[v.name] for v in proto.graph.output} == {
        TensorProto.FLOAT}
    assert onnx_metadata(proto, "t")[1].precision == "fp16"
    x = check_input(model.meta, SIZE)
    seg, depth = ort_run(proto.SerializeToString(), x)
    with torch.no_grad():
        ref = fold(model)(x)
    assert seg.dtype == np.float32
    assert np.abs(seg - ref.seg_logits.numpy()).max() < 5e-3  # fp16 rounding of random-init logits ~0.5


def test_cli_onnx_export_checks_itself_and_runs(weights, tmp_path):
    out = tmp_path / "model.onnx"
    r = cli("export", str(weights), "--format", "onnx", "-o", str(out), "--dynamic", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("check against torch"))
    assert "onnxruntime fp32" in line and "argmax agreement 100.00%" in line
    diff = float(line.split("max |diff| seg ")[1].split(",")[0])
    assert diff < 1e-4
    assert "metadata inside: 19 classes, log depth (m)" in r.stdout and "input size 64x128" in r.stdout
    assert out.is_file() and not list(tmp_path.glob("*.partial"))
    stats = tmp_path / "stats.json"
    r = cli("run", "synthetic:frames=3,size=64x128", "--weights", str(out), "--progress", "none",
            "--stats-json", str(stats), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    rep = json.loads(stats.read_text())
    assert rep["frames"]["out"] == 3 and rep["model"]["backend"] == "openvino"  # auto on the CPU
    assert rep["model"]["input_box"] == list(SIZE)  # the box came from the metadata inside the file


def test_cli_openvino_export_writes_xml_and_bin_and_runs(weights, tmp_path):
    out = tmp_path / "ir" / "model.xml"
    r = cli("export", str(weights), "--format", "openvino", "-o", str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert out.is_file() and out.with_suffix(".bin").is_file()
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("check against torch"))
    assert "openvino fp32" in line and "argmax agreement 100.00%" in line
    assert float(line.split("max |diff| seg ")[1].split(",")[0]) < 1e-4
    stats = tmp_path / "stats.json"
    r = cli("run", "synthetic:frames=2,size=64x128", "--weights", str(out), "--progress", "none",
            "--precision", "fp32", "--stats-json", str(stats), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    model = json.loads(stats.read_text())["model"]
    assert model["backend"] == "openvino" and model["precision"] == "fp32" and model["startup_s"] > 0


def test_export_checks_on_a_real_frame(weights, tmp_path, shared_data):
    out = tmp_path / "model.onnx"
    r = cli("export", str(weights), "--format", "onnx", "-o", str(out), "--check-image",
            str(shared_data / CITYSCAPES), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "the given image at 64x128" in r.stdout and "argmax agreement 100.00%" in r.stdout


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_bad_exports_and_bad_exported_files_are_one_line(weights, tmp_path):
    cache = tmp_path / "cache"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + os.urandom(2000))
    one_error_line(cli("run", "synthetic:frames=1,size=64x128", "--weights", str(corrupt), cache=cache),
                   "corrupt.onnx", "ONNX")
    # a foreign ONNX: a graph with other outputs
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["logits"])], "foreign",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 64, 64])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g), str(foreign))
    one_error_line(cli("run", "synthetic:frames=1,size=64x128", "--weights", str(foreign), "--backend",
                       "onnxruntime", cache=cache), "not a segformer3d-rt export", "logits")
    # an IR without its .bin
    ir = tmp_path / "ir.xml"
    assert cli("export", str(weights), "--format", "openvino", "-o", str(ir), cache=cache).returncode == 0
    ir.with_suffix(".bin").unlink()
    one_error_line(cli("run", "synthetic:frames=1,size=64x128", "--weights", str(ir), cache=cache),
                   "ir.bin", "not found")
    one_error_line(cli("export", str(weights), "--format", "onnx", "-o", str(tmp_path / "m.xml"), cache=cache),
                   "-o NAME.onnx")
    one_error_line(cli("export", str(weights), "--format", "onnx", "-o", str(tmp_path / "m.onnx"), "--precision",
                       "bf16", cache=cache), "--precision 'bf16'", "fp32, fp16")
    one_error_line(cli("export", str(weights), "--format", "onnx", "-o", str(tmp_path / "m.onnx"), "--input-size",
                       "100x128", cache=cache), "multiples of 32")
    one_error_line(cli("export", str(tmp_path / "missing.safetensors"), "--format", "onnx", "-o",
                       str(tmp_path / "m.onnx"), cache=cache), "not found")
    # an exported file given to the torch backend
    one_error_line(cli("eval", "--data", "synthetic:n=1,size=64x128", "--weights", str(corrupt), "--backend",
                       "torch", cache=cache), "needs a checkpoint")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_tensorrt_without_cuda_is_one_line(weights, tmp_path):
    out = tmp_path / "m.engine"
    one_error_line(cli("export", str(weights), "--format", "tensorrt", "-o", str(out), cache=tmp_path),
                   "TensorRT needs a CUDA GPU")
    assert not out.exists()
