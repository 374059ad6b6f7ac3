"""`info` / `convert` and every bad weights input: one line on stderr, exit code 2, no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from segformer3d_rt import build_model, save_checkpoint
from segformer3d_rt.model.segformer import VARIANTS

# SegFormer paper, encoder / decoder parameters in millions (decoder counted with ADE20K's 150 classes)
PAPER_PARAMS = {"b0": (3.4, 0.4), "b1": (13.1, 0.6), "b2": (24.2, 3.3), "b3": (44.0, 3.3),
                "b4": (60.8, 3.3), "b5": (81.4, 3.3)}


@pytest.mark.parametrize("variant", list(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(variant):
    model = build_model(variant, num_classes=150, depth=False)
    n = model.num_parameters()
    enc, dec = PAPER_PARAMS[variant]
    assert abs(n["encoder"] / 1e6 - enc) <= 0.1
    assert abs(n["seg_head"] / 1e6 - dec) <= 0.1
    assert model.meta.decoder_dim == VARIANTS[variant].decoder_dim


def test_any_input_size_gives_stride4_outputs():
    model = build_model("b0", num_classes=3)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 61, 97))
    assert out.seg_logits.shape == (1, 3, 16, 25)
    assert out.depth.shape == (1, 1, 16, 25)
    seg_only = build_model("b0", depth=False)
    with torch.no_grad():
        assert seg_only(torch.randn(1, 3, 64, 64)).depth is None


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segformer3d_rt", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_user_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def b0_file(tmp_path_factory) -> Path:
    return save_checkpoint(build_model("b0"), tmp_path_factory.mktemp("w") / "b0.safetensors")


def test_info_on_project_file(b0_file):
    r = cli("info", str(b0_file), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "segformer3d-rt" and info["variant"] == "b0"
    assert info["num_classes"] == 19 and info["classes"][0] == "road"
    assert info["depth"] == "log depth (m)"
    assert info["parameters"]["total"] == build_model("b0").num_parameters()["total"]
    r = cli("info", str(b0_file))
    assert r.returncode == 0 and "segformer3d-rt" in r.stdout and "road" in r.stdout


def test_convert_then_info(b0_file, tmp_path):
    out = tmp_path / "half.safetensors"
    r = cli("convert", str(b0_file), "-o", str(out), "--half")
    assert r.returncode == 0, r.stderr
    assert out.is_file() and load_file(str(out))["seg_head.pred.weight"].dtype == torch.float16
    # shared weights stay readable by others: the file follows the umask like any other, not 0600
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_help_and_version():
    for args in (["--help"], ["info", "--help"], ["convert", "--help"]):
        r = cli(*args)
        assert r.returncode == 0 and "usage" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("segformer3d-rt ")


def test_missing_file(tmp_path):
    assert_user_error(cli("info", str(tmp_path / "nope.pt")), "not found")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("hello, I am text\n" * 10)
    assert_user_error(cli("info", str(p)), "not a checkpoint")
    s = tmp_path / "notes.safetensors"
    s.write_text("hello")
    assert_user_error(cli("info", str(s)), "not a readable safetensors")


def test_truncated_files(b0_file, tmp_path):
    data = b0_file.read_bytes()
    t = tmp_path / "cut.safetensors"
    t.write_bytes(data[: len(data) // 2])
    assert_user_error(cli("info", str(t)), "cut.safetensors")
    pt = tmp_path / "full.pt"
    torch.save(build_model("b0").state_dict(), pt)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    assert_user_error(cli("info", str(cut)), "truncated or corrupt")


def test_unknown_layout(tmp_path):
    p = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}, p)
    assert_user_error(cli("info", str(p)), "unknown layout", "conv1.weight")


def test_key_mismatch_is_never_a_silent_partial_load(tmp_path):
    p = tmp_path / "ours.safetensors"
    save_checkpoint(build_model("b0"), p)
    tensors = load_file(str(p))
    from safetensors import safe_open
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
    del tensors["encoder.stages.1.blocks.0.attn.q.weight"]
    tensors["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=meta)
    r = cli("info", str(broken))
    assert_user_error(r, "missing 1 keys", "encoder.stages.1.blocks.0.attn.q.weight", "unexpected 1 keys",
                      "extra.weight")


def test_shape_mismatch(tmp_path):
    p = tmp_path / "ours.safetensors"
    save_checkpoint(build_model("b0"), p)
    tensors = load_file(str(p))
    from safetensors import safe_open
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
    tensors["seg_head.pred.weight"] = torch.zeros(5, 256, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    # the head's width against the metadata's classes, said as such
    assert_user_error(cli("info", str(bad)), "19 classes", "5 outputs")
    tensors = load_file(str(p))
    tensors["seg_head.proj.0.weight"] = torch.zeros(256, 16, 1, 1)  # any other tensor of the wrong shape
    save_file(tensors, str(bad), metadata=meta)
    assert_user_error(cli("info", str(bad)), "shape mismatch", "seg_head.proj.0.weight")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/segformer3d_rt_pwned",))


def test_pickled_code_never_runs(tmp_path):
    Path("/tmp/segformer3d_rt_pwned").unlink(missing_ok=True)
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"a": _Evil()}}, p)
    assert_user_error(cli("info", str(p)), "weights_only")
    assert not Path("/tmp/segformer3d_rt_pwned").exists()


def test_encoder_only_file_is_described_but_not_run(tmp_path):
    sd = build_model("b0").encoder.state_dict()
    # our timm names rewritten to NVlabs MiT names by hand (patch_embed{k}, block{k}, norm{k})
    p = tmp_path / "mit_b0.pth"
    names = {}
    for k, v in sd.items():
        k2 = (k.replace("patch_embed.", "patch_embed1.")
              .replace("stages.1.downsample.", "patch_embed2.").replace("stages.2.downsample.", "patch_embed3.")
              .replace("stages.3.downsample.", "patch_embed4."))
        for i in range(4):
            k2 = k2.replace(f"stages.{i}.blocks.", f"block{i + 1}.").replace(f"stages.{i}.norm.", f"norm{i + 1}.")
        k2 = k2.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        names[k2] = v
    torch.save(names, p)
    r = cli("info", str(p), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "mit"
    r = cli("convert", str(p), "-o", str(tmp_path / "x.safetensors"))
    assert_user_error(r, "only an encoder")
