"""Issues 25 and 26: a checkpoint's metadata is untrusted input, user-sized requests are bounded, '-' means
standard output wherever a path is asked for, and one policy for existing outputs (--overwrite) in every command.
Each case goes through the real CLI and fails on the code before these issues."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import one_error_line
from segformer3d_rt import build_model, cli, save_checkpoint
from segformer3d_rt.model.formats.project import META_KEY

RUN = ["--input-size", "64x96", "--progress", "none", "--preset", "ultrafast", "--device", "cpu"]
SOURCE = "synthetic:frames=4,size=64x96"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_model("b0"), tmp_path_factory.mktemp("w") / "w.safetensors")


def _with_meta(src: Path, dst: Path, **changes) -> Path:
    """A copy of ``src`` whose metadata JSON has ``changes`` (a key -> a JSON value, or depth.kind etc.)."""
    tensors = load_file(src)
    with open(src, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = json.loads(header["__metadata__"][META_KEY])
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            meta[outer][inner] = value
        else:
            meta[key] = value
    save_file(tensors, str(dst), metadata={**header["__metadata__"], META_KEY: json.dumps(meta)})
    return dst


@pytest.mark.parametrize("changes, key", [
    ({"std": [0, 0, 0]}, "std"),
    ({"mean": "abc"}, "mean"),
    ({"input_size": [0, 0]}, "input_size"),
    ({"depth.kind": "banana"}, "depth.kind"),
    ({"palette": [[0, 0, 0]]}, "palette"),
    ({"class_names": [1, 2, 3]}, "class_names"),
    ({"depth.scale": -1}, "depth.scale"),
])
def test_checkpoint_metadata_is_checked_against_its_schema(weights, tmp_path, capsys, changes, key):
    bad = _with_meta(weights, tmp_path / "bad.safetensors", **changes)
    for argv in (["info", str(bad)], ["run", SOURCE, "--weights", str(bad), *RUN]):
        line = one_error_line(capsys, argv, "bad.safetensors", f"'{key}'")
        assert "must be" in line


def test_the_classes_must_be_the_heads_width(weights, tmp_path, capsys):
    names = [f"c{i}" for i in range(3)]
    bad = _with_meta(weights, tmp_path / "narrow.safetensors", class_names=names, palette=[[0, 0, 0]] * 3)
    one_error_line(capsys, ["info", str(bad)], "narrow.safetensors", "3 classes", "19 outputs")


def test_an_exports_embedded_metadata_is_checked_too(weights, tmp_path, capsys):
    import onnx

    from segformer3d_rt.model.export import META_KEY as ONNX_META

    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(weights), "--format", "onnx", "-o", str(out), "--input-size", "64x96"]) == 0
    proto = onnx.load(str(out))
    for p in proto.metadata_props:
        if p.key == ONNX_META:
            meta = json.loads(p.value)
            meta["std"] = [0.2, 0.0, 0.2]
            p.value = json.dumps(meta)
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    capsys.readouterr()
    one_error_line(capsys, ["run", SOURCE, "--weights", str(tmp_path / "bad.onnx"), *RUN], "bad.onnx", "'std'")


@pytest.mark.parametrize("argv, needle", [
    (["run", SOURCE, "--batch-size", "1000", *RUN], "--batch-size"),
    (["run", SOURCE, "--queue-size", "0", *RUN], "--queue-size"),
    (["train", "--lr", "-0.001"], "--lr"),
    (["train", "--steps", "0"], "--steps"),
    (["train", "--batch-size", "100000"], "--batch-size"),
    (["eval", "--data", "synthetic:n=1", "--max-depth", "0"], "--max-depth"),
    (["bench", "--batch", "0"], "--batch"),
    (["synth", "-o", "x.mp4", "--frames", "0"], "--frames"),
])
def test_requests_sized_by_the_user_are_bounded_before_work(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    one_error_line(capsys, argv, needle)
    assert not list(tmp_path.iterdir())  # nothing was made: not a checkpoint, not a run folder


def test_memory_that_cannot_be_had_names_the_settings(tmp_path, capsys, monkeypatch):
    """The network itself failing to allocate (the message torch's CPU allocator gives): one line naming what to
    lower, not a stage's traceback text."""
    from segformer3d_rt.runtime.backends.torch_model import TorchNetwork

    def refuse(self, x):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 56918016000 bytes.")
    monkeypatch.setattr(TorchNetwork, "__call__", refuse)
    line = one_error_line(capsys, ["run", SOURCE, "--backend", "torch", "--batch-size", "4", *RUN],
                          "not enough memory", "--batch-size", "--input-size")
    assert "batch of 4 at 64x96" in line


def test_dash_streams_the_video_to_standard_output(tmp_path):
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", SOURCE, "-o", "-", *RUN],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    with av.open(io.BytesIO(r.stdout)) as c:  # a fragmented MP4: it plays from a pipe
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (96, 64)
    assert b"plan: " in r.stderr  # the logs stay on standard error


def test_dash_for_json_is_standard_output_and_two_streams_are_refused(tmp_path, capsys):
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", SOURCE, "--stats-json", "-", *RUN],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"]["out"] == 4
    one_error_line(capsys, ["run", SOURCE, "-o", "-", "--stats-json", "-", *RUN], "standard output")
    for argv in (["export", "--format", "onnx", "-o", "-"], ["train", "--out", "-", "--steps", "1"],
                 ["convert", "x.safetensors", "-o", "-"]):
        one_error_line(capsys, argv, "standard output")


def _precious(path: Path) -> Path:
    path.write_text("precious")
    return path


@pytest.mark.parametrize("command", ["run", "attention", "stats", "synth", "convert", "export", "eval-json",
                                     "bench-json", "eval-save"])
def test_an_existing_output_is_replaced_only_with_overwrite(weights, tmp_path, capsys, command):
    target = {"export": "e.onnx", "eval-save": "pictures", "convert": "c.safetensors", "run": "o.mp4",
              "attention": "a.png", "synth": "s.mp4"}.get(command, "r.json")
    out = tmp_path / target
    if command == "eval-save":
        out.mkdir()
        _precious(out / "keep.txt")
    else:
        _precious(out)
    argv = {
        "run": ["run", SOURCE, "-o", str(out), *RUN],
        "attention": ["attention", SOURCE, "-o", str(out), "--input-size", "64x96", "--progress", "none"],
        "stats": ["run", SOURCE, "--stats-json", str(out), *RUN],
        "synth": ["synth", "-o", str(out), "--frames", "2", "--size", "64x96"],
        "convert": ["convert", str(weights), "-o", str(out)],
        "export": ["export", str(weights), "--format", "onnx", "-o", str(out), "--input-size", "64x96"],
        "eval-json": ["eval", "--weights", str(weights), "--data", "synthetic:n=1,size=64x96", "--json", str(out),
                      "--backend", "torch"],
        "bench-json": ["bench", "--weights", str(weights), "--sizes", "64x64", "--iters", "1", "--warmup", "0",
                       "--json", str(out), "--device", "cpu"],
        "eval-save": ["eval", "--weights", str(weights), "--data", "synthetic:n=1,size=64x96", "--save", str(out),
                      "--backend", "torch"],
    }[command]
    one_error_line(capsys, argv, "--overwrite", target)
    precious = out / "keep.txt" if command == "eval-save" else out
    assert precious.read_text() == "precious"
    assert cli.main(argv + ["--overwrite"]) == 0, capsys.readouterr().err
    if command != "eval-save":
        assert out.read_bytes() != b"precious"
    else:
        assert len(list(out.iterdir())) == 2


def test_train_over_a_finished_run_only_with_overwrite_and_never_over_an_input(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["train", "--data", "synthetic:size=64x96", "--crop", "64x96", "--steps", "1", "--batch-size", "1",
            "--workers", "0", "--progress", "none", "--out", "run"]
    assert cli.main(base) == 0
    first = (tmp_path / "run" / "last.safetensors").read_bytes()
    one_error_line(capsys, base, "already holds a run", "--overwrite")
    assert cli.main(base + ["--overwrite", "--seed", "5"]) == 0
    assert (tmp_path / "run" / "last.safetensors").read_bytes() != first
    # --overwrite never reaches an input: the source, the weights
    clip = tmp_path / "in.mp4"
    assert cli.main(["synth", "-o", str(clip), "--frames", "2", "--size", "64x96"]) == 0
    one_error_line(capsys, ["run", str(clip), "-o", str(clip), "--overwrite", *RUN], "overwrite the source")
    one_error_line(capsys, ["convert", str(weights), "-o", str(weights), "--overwrite"], "overwrite")
