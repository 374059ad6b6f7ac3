"""The network against Hugging Face's SegFormer (a reference nobody here wrote), in every layout."""
from __future__ import annotations

import json

import pytest
import torch

from segformer3d_rt import build_model, load_model
from segformer3d_rt.model import load_encoder, read_checkpoint, save_checkpoint
from segformer3d_rt.model.metadata import SEGFORMER3D_MEAN
from tests.hf_layouts import hf_encoder_to_nvlabs, hf_to_nvlabs, hf_to_segformer3d

transformers = pytest.importorskip("transformers")

SIZES = {
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    # B2's shape with a 768-wide decoder, the official width for B2-B5
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
}


def _random_hf(size: str, num_labels: int, seed: int) -> "transformers.SegformerForSemanticSegmentation":
    torch.manual_seed(seed)
    cfg = transformers.SegformerConfig(num_labels=num_labels, **SIZES[size])
    model = transformers.SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that a mis-mapped BN shows
        bn = model.decode_head.batch_norm
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.2)
    return model


def _hf_state(model) -> dict[str, torch.Tensor]:
    """The tensors under the names `save_pretrained` writes (transformers 5 renames modules in memory)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return load_file(f"{d}/model.safetensors")


INPUTS = [(2, 3, 128, 160), (1, 3, 100, 150), (1, 3, 77, 131)]  # the last two are not multiples of 32


@pytest.fixture(scope="module", params=[("b0", 7), ("b1", 19), ("b2", 4)], ids=["b0-7cls", "b1-19cls", "b2-768-4cls"])
def hf_model(request, tmp_path_factory):
    size, k = request.param
    model = _random_hf(size, k, seed=hash(size) % 1000)
    directory = tmp_path_factory.mktemp(f"hf-{size}")
    model.save_pretrained(directory)
    return size, model, directory


@pytest.mark.parametrize("shape", INPUTS, ids=lambda s: f"{s[2]}x{s[3]}")
def test_huggingface_directory_matches_reference(hf_model, shape):
    size, hf, directory = hf_model
    ours = load_model(directory)
    assert ours.meta.variant == size
    assert ours.meta.num_classes == hf.config.num_labels
    assert ours.meta.depth is None
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        out = ours(x)
    assert out.depth is None
    assert out.seg_logits.shape == ref.shape  # stride 4, as HF's head
    assert (out.seg_logits - ref).abs().max().item() < 1e-4


def test_huggingface_single_file_and_bin(hf_model, tmp_path):
    size, hf, directory = hf_model
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
    # the weights file itself, config.json beside it
    out = load_model(directory / "model.safetensors")(x).seg_logits
    assert (out - ref).abs().max().item() < 1e-4
    # the older pytorch_model.bin form (transformers 5 writes only safetensors: write it as 4.x did)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(_hf_state(hf), bin_dir / "pytorch_model.bin")
    (bin_dir / "config.json").write_text((directory / "config.json").read_text())
    assert read_checkpoint(bin_dir).format == "huggingface"
    with torch.no_grad():
        out = load_model(bin_dir)(x).seg_logits
    assert (out - ref).abs().max().item() < 1e-4


def test_nvlabs_layout_loads_to_same_outputs(hf_model, tmp_path):
    size, hf, _ = hf_model
    path = tmp_path / "segformer.pth"
    torch.save(hf_to_nvlabs(_hf_state(hf), SIZES[size]["depths"]), path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "nvlabs"
    ours = load_model(path)
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        assert (ours(x).seg_logits - hf(pixel_values=x).logits).abs().max().item() < 1e-4


def test_segformer3d_layout_loads_to_same_outputs(tmp_path):
    hf = _random_hf("b0", 19, seed=5)
    depth_ref = _random_hf("b0", 1, seed=6)
    # the depth reference shares the encoder, as Segformer3D's two heads do
    depth_ref.segformer.load_state_dict(hf.segformer.state_dict())
    path = tmp_path / "segformer3d.pt"
    torch.save(hf_to_segformer3d(_hf_state(hf), SIZES["b0"]["depths"], _hf_state(depth_ref)), path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "segformer3d"
    assert ckpt.meta.mean == SEGFORMER3D_MEAN  # its 0.56 typo travels with its weights
    assert ckpt.meta.depth is not None and ckpt.meta.depth.kind == "inverse" and ckpt.meta.depth.scale == 10.0
    ours = load_model(path)
    x = torch.randn(2, 3, 77, 131)
    with torch.no_grad():
        out = ours(x)
        assert (out.seg_logits - hf(pixel_values=x).logits).abs().max().item() < 1e-4
        assert out.depth.shape == (2, 1, 20, 33)
        assert (out.depth - depth_ref(pixel_values=x).logits).abs().max().item() < 1e-4


def test_original_b3_layout_has_604_entries_and_45m_parameters(tmp_path):
    """seed-notes: the original's B3 + two 256-wide heads is a 604-entry state_dict of 45.1 M parameters."""
    model = build_model("b3", decoder_dim=256)
    n = model.num_parameters()["total"]
    assert abs(n / 1e6 - 45.1) < 0.05
    cfg = dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], decoder_hidden_size=256)
    hf = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=19, **cfg))
    depth = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=1, **cfg))
    sd = hf_to_segformer3d(_hf_state(hf), [3, 4, 18, 3], _hf_state(depth))
    assert len(sd) == 604 == len(model.state_dict())
    path = tmp_path / "b3.pt"
    torch.save(sd, path)
    loaded = load_model(path)
    assert loaded.meta.variant == "b3" and loaded.meta.decoder_dim == 256


def test_mit_backbone_initialises_encoder(tmp_path):
    hf = _random_hf("b0", 19, seed=3)
    enc = hf_encoder_to_nvlabs(_hf_state(hf), SIZES["b0"]["depths"])
    enc["head.weight"] = torch.zeros(1000, 256)  # ImageNet classifier, ignored
    enc["head.bias"] = torch.zeros(1000)
    path = tmp_path / "mit_b0.pth"
    torch.save(enc, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "mit" and ckpt.encoder_only
    model = build_model("b0")
    assert load_encoder(model, path) == "mit"
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        ref = hf.segformer(pixel_values=x, output_hidden_states=True).hidden_states
        feats = model.encode(x)
    for a, b in zip(feats, ref):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-4


def test_project_format_roundtrip_keeps_outputs_and_metadata(tmp_path):
    model = build_model("b0", num_classes=5)
    model.meta = model.meta.with_(class_names=("a", "b", "c", "d", "e"), input_size=(256, 512),
                                  description="test")
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.meta == model.meta
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.seg_logits, b.seg_logits) and torch.equal(a.depth, b.depth)
    # half precision storage: smaller, outputs close
    half = save_checkpoint(model, tmp_path / "h.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    with torch.no_grad():
        c = load_model(half)(x)
    assert (c.seg_logits - a.seg_logits).abs().max().item() < 5e-2


def test_convert_every_format_to_project_format(hf_model, tmp_path):
    from segformer3d_rt.commands.weights import convert

    size, hf, directory = hf_model
    out = convert(str(directory), str(tmp_path / "x.safetensors"))
    ckpt = read_checkpoint(out)
    assert ckpt.format == "segformer3d-rt" and ckpt.meta.source_format == "huggingface"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (load_model(out)(x).seg_logits - hf(pixel_values=x).logits).abs().max().item() < 1e-4
    meta = json.loads(json.dumps(ckpt.meta.to_json()))  # metadata is plain JSON
    assert "class_names" in meta
