"""`segformer3d-rt bench` on CPU: model-only sweeps and the pipeline against the model in one run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from segformer3d_rt import build_model
from segformer3d_rt.model.folding import fold
from segformer3d_rt.runtime.backends.fidelity import check_input
from segformer3d_rt.runtime.backends.openvino import has_bf16


def _bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "bench", "--device", "cpu", "--threads", "2",
                        "--json", str(out), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


@torch.inference_mode()
def _bf16_against_fp32(size: tuple[int, int]) -> tuple[float, float, int]:
    """What the bench says it measures, computed here with torch alone: the random b0 of seed 0 (the bench's), its
    heads folded, on the check frame, fp32 against bf16 autocast: (argmax agreement, mean relative depth
    difference, pixels compared)."""
    torch.manual_seed(0)
    model = build_model("b0").eval()
    net = fold(model)
    x = check_input(model.meta, size)
    ref = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x)
    agree = (ref.seg_logits.argmax(1) == low.seg_logits.float().argmax(1)).float().mean().item()
    d_ref, d_low = model.meta.depth.to_depth(ref.depth.float()), model.meta.depth.to_depth(low.depth.float())
    depth_rel = ((d_low - d_ref).abs() / d_ref.clamp_min(1e-6)).mean().item()
    return agree, depth_rel, ref.seg_logits[0, 0].numel()


def test_model_only_sweep_reports_every_case_with_percentiles(tmp_path):
    rep = _bench(tmp_path, "--variant", "b0", "--sizes", "64x128,64x96", "--batch", "1,2", "--precision",
                 "fp32,bf16", "--mode", "folded", "--warmup", "1", "--iters", "4")
    rows = rep["model"]
    assert len(rows) == 2 * 2 * 2
    assert {(r["size"], r["batch"], r["precision"], r["mode"]) for r in rows} == {
        (s, b, p, "folded") for s in ("64x128", "64x96") for b in (1, 2) for p in ("fp32", "bf16")}
    expected = {f"{h}x{w}": _bf16_against_fp32((h, w)) for h, w in ((64, 128), (64, 96))}
    for r in rows:
        lat = r["latency_ms"]
        assert lat["count"] == 4 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["throughput_fps"] == pytest.approx(r["batch"] * 1000.0 / lat["p50"], rel=0.5)
        assert r["peak_gpu_mem_mb"] is None
        if r["precision"] == "bf16":  # fidelity against fp32 on the same input: the figures torch gives here
            f = r["fidelity"]
            agree, depth_rel, pixels = expected[r["size"]]  # a batch of 2 is the same frame twice
            assert f["argmax_agreement"] == pytest.approx(agree, abs=1.01 / pixels)  # within one pixel
            assert f["depth_rel_diff_mean"] == pytest.approx(depth_rel, rel=0.01)
            assert f["depth_rel_diff_mean"] > 0  # bf16 really ran: fp32 under a bf16 label would say 0
        else:
            assert "fidelity" not in r
    assert rep["environment"]["device"] == "cpu" and rep["environment"]["threads"] == 2


def test_pipeline_against_model_only_in_the_same_run(tmp_path):
    rep = _bench(tmp_path, "--variant", "b0", "--source", "synthetic:frames=12,size=128x256",
                 "--input-size", "64x128", "--warmup", "1", "--iters", "4")
    p = rep["pipeline"]
    report = p["report"]
    assert report["frames"]["in"] == report["frames"]["out"] == 12
    assert report["model"]["input_sizes"] == ["(64, 128)"]
    assert p["ratio"] == pytest.approx(report["throughput_fps"] / p["model_only"]["throughput_fps"])
    assert p["model_only"]["size"] == "64x128"


def test_repeated_rounds_report_the_median_round(tmp_path):
    rep = _bench(tmp_path, "--variant", "b0", "--source", "synthetic:frames=8,size=128x256",
                 "--input-size", "64x128", "--warmup", "1", "--iters", "3", "--repeat", "3")
    p = rep["pipeline"]
    ratios = [r["ratio"] for r in p["rounds"]]
    assert len(ratios) == 3 and all(r > 0 for r in ratios)
    assert p["ratio"] == sorted(ratios)[1]
    assert p["ratio"] == pytest.approx(p["report"]["throughput_fps"] / p["model_only"]["throughput_fps"])
    for r in p["rounds"]:
        assert r["ratio"] == pytest.approx(r["pipeline_fps"] / r["model_only_fps"])


def test_bad_mode_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "bench", "--variant", "b0", "--mode", "turbo",
                        "--sizes", "64x64", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unknown --mode 'turbo'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "bench", "--variant", "b0", "--mode", "cudagraph",
                        "--sizes", "64x64", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs a CUDA device" in r.stderr


def test_backend_sweep_with_startup_and_fidelity(tmp_path):
    rep = _bench(tmp_path, "--variant", "b0", "--backend", "torch,onnxruntime,openvino", "--input-size", "64x128",
                 "--batch-size", "1", "--precision", "fp32,bf16", "--warmup", "1", "--iters", "3")
    rows = rep["model"]
    # OpenVINO computes bf16 only where the CPU has it (AMX, AVX-512 BF16); elsewhere that case is skipped
    # with its reason rather than timed as a second fp32 row under a bf16 label
    bf16 = has_bf16()
    assert [(r["backend"], r["precision"]) for r in rows] == [
        ("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32")] + (
        [("openvino", "bf16")] if bf16 else [])
    assert rep["skipped"] == ["onnxruntime bf16"] + ([] if bf16 else ["openvino bf16"])
    assert {r["size"] for r in rows} == {"64x128"}  # --input-size is the size when no --sizes
    for r in rows:
        assert r["startup_s"] > 0 and r["latency_ms"]["count"] == 3
        if r["backend"] != "torch":
            assert r["mode"] == "-" and r["backend_startup_s"] <= r["startup_s"]
            if r["precision"] == "fp32":  # the exported graph against torch on the same input
                assert r["fidelity"]["max_abs_diff"] < 1e-4 and r["fidelity"]["argmax_agreement"] == 1.0
    assert rep["environment"]["openvino"] and rep["environment"]["onnxruntime"]


def test_the_transformers_comparison_times_each_side_in_its_own_process_alternating(tmp_path):
    rep = _bench(tmp_path, "--variant", "b0", "--backend", "openvino", "--input-size", "64x128", "--warmup", "1",
                 "--iters", "3", "--compare", "transformers", "--rounds", "2")
    (row,) = rep["model"]
    (hf,) = rep["transformers"]
    assert "SegformerForSemanticSegmentation b0 (single head, random weights)" in hf["model"]
    assert hf["size"] == "64x128" and hf["batch"] == 1 and hf["latency_ms"]["count"] == 3
    rounds = row["vs_transformers_rounds"]
    assert len(rounds) == 2 and len(hf["rounds_p50_ms"]) == 2
    pids = [p for r in rounds for p in r["pids"]]
    assert len(set(pids)) == 4 and row["pid"] not in pids  # four fresh processes, none of them the sweep's
    for r in rounds:
        assert r["ratio"] == pytest.approx(r["reference_p50_ms"] / r["ours_p50_ms"])
    ratios = sorted(r["ratio"] for r in rounds)
    assert row["vs_transformers"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert row["vs_transformers_range"] == pytest.approx(ratios)
    assert sorted(hf["rounds_p50_ms"]) == pytest.approx(sorted(r["reference_p50_ms"] for r in rounds))


def test_bad_backend_and_compare_are_one_line():
    base = [sys.executable, "-m", "segformer3d_rt", "bench", "--variant", "b0", "--sizes", "64x64", "--device", "cpu"]
    for extra, needle in ((["--backend", "turbo"], "unknown --backend 'turbo'"),
                          (["--backend", "tensorrt"], "runs on CUDA"),
                          (["--compare", "timm"], "unknown --compare 'timm'")):
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
