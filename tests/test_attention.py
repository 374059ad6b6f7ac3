"""Attention maps (issue 12): capture from the layers' own projections, geometry back onto the frame, the view, the
`attention` command and `run --view attention`."""
from __future__ import annotations

import math
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segformer3d_rt.runtime.backends import torch_network
from segformer3d_rt import cli
from segformer3d_rt.model import build_model
from segformer3d_rt.model.attention import (MEAN, AttentionCapture, AttentionRequest, BlockRef, attention_module,
                                            head_map, select_blocks)
from segformer3d_rt.pipeline.attention_fit import FrameFit, fit_for
from segformer3d_rt.pipeline.attention_view import AttentionRenderer, QueryPoint, frame_map
from segformer3d_rt.pipeline.infer import InferenceEngine
from segformer3d_rt.pipeline.preprocess import Preprocessor

ALL_BLOCKS = tuple(BlockRef(s, b) for s in (1, 2, 3, 4) for b in (1, 2))  # b0: two blocks per stage


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("b0").eval()


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, h, w, generator=g)


def _capture(model, x: torch.Tensor, blocks=ALL_BLOCKS, queries: bool = True):
    with torch.no_grad(), AttentionCapture(model, AttentionRequest(blocks, queries=queries)) as cap:
        out = model(x)
    return out, cap.frames()[0]


# ----------------------------------------------------------------------------- capture


def test_every_map_sums_to_one_over_the_keys_at_key_resolution(model):
    _, maps = _capture(model, _image(96, 160))
    for ref in ALL_BLOCKS:
        att = maps[ref]
        assert att.key_hw == (3, 5) and att.key_cell == 32  # sr 8/4/2/1 at strides 4/8/16/32: 32-px cells
        assert att.query_hw == (96 // att.stride, 160 // att.stride)
        torch.testing.assert_close(att.received.sum(dim=(1, 2)), torch.ones(att.heads), rtol=0, atol=1e-5)
        for token in [(0, 0), (att.query_hw[0] - 1, att.query_hw[1] - 1), (1, 2)]:
            m = att.query_map(token)
            assert m.shape == (att.heads, 3, 5) and (m >= 0).all()
            torch.testing.assert_close(m.sum(dim=(1, 2)), torch.ones(att.heads), rtol=0, atol=1e-5)
            torch.testing.assert_close(head_map(m, MEAN).sum(), torch.tensor(1.0), rtol=0, atol=1e-5)
            torch.testing.assert_close(head_map(m, att.heads).sum(), torch.tensor(1.0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("ref", [BlockRef(1, 1), BlockRef(2, 2), BlockRef(3, 1), BlockRef(4, 2)])
def test_maps_equal_softmax_of_q_k_from_the_layers_weights(model, ref):
    """By hand from the module's own sub-layers (q, sr, norm, kv as timm reshapes it), on a small input; the same
    matrix times v through proj gives the module's own (fused-attention) output, so these are the weights it used."""
    attn = attention_module(model, ref)
    seen = {}
    pre = attn.register_forward_pre_hook(lambda m, args: seen.update(x=args[0], hw=tuple(args[1])))
    post = attn.register_forward_hook(lambda m, args, out: seen.update(out=out))
    try:
        _, maps = _capture(model, _image(64, 96, seed=3), blocks=(ref,))
    finally:
        pre.remove()
        post.remove()
    x, (h, w) = seen["x"], seen["hw"]
    b, n, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    with torch.no_grad():
        q = attn.q(x).reshape(b, n, heads, d).transpose(1, 2)
        kx = x
        if attn.sr is not None:
            kx = attn.norm(attn.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2))
        kv = attn.kv(kx).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)  # B x heads x N x Nk
        rebuilt = attn.proj((probs @ v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(rebuilt, seen["out"], rtol=1e-4, atol=1e-5)
    att = maps[ref]
    hk, wk = att.key_hw
    assert hk * wk == probs.shape[-1]
    torch.testing.assert_close(att.received, probs[0].mean(dim=1).reshape(heads, hk, wk), rtol=1e-5, atol=1e-6)
    for token in [(0, 0), (h // 2, w // 3), (h - 1, w - 1)]:
        want = probs[0, :, token[0] * w + token[1]].reshape(heads, hk, wk)
        torch.testing.assert_close(att.query_map(token), want, rtol=1e-5, atol=1e-6)


def test_maps_equal_hugging_faces_own_attention_probabilities(tmp_path, capsys):
    """A Hugging Face checkpoint, loaded through its format: our maps are the probabilities HF's eager attention
    returns (an implementation independent of timm's), and the command draws from that checkpoint."""
    transformers = pytest.importorskip("transformers")
    from segformer3d_rt.model import load_model

    torch.manual_seed(4)
    cfg = transformers.SegformerConfig(num_labels=5, hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2],
                                       decoder_hidden_size=256)
    cfg._attn_implementation = "eager"  # sdpa returns no attention probabilities
    hf = transformers.SegformerForSemanticSegmentation(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    x = _image(64, 96, seed=8)
    with torch.no_grad():
        probs = hf(pixel_values=x, output_attentions=True).attentions  # per block: B x heads x N x Nk
    _, maps = _capture(ours, x)
    for ref, p in zip(ALL_BLOCKS, probs):
        att = maps[ref]
        torch.testing.assert_close(att.received.flatten(1), p[0].mean(dim=1), rtol=1e-5, atol=1e-6)
        w = att.query_hw[1]
        torch.testing.assert_close(att.query_map((1, 2)).flatten(1), p[0, :, w + 2], rtol=1e-5, atol=1e-6)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (64, 96, 3), np.uint8))
    code, err = _main(capsys, "attention", str(image), "-o", str(tmp_path / "a.png"), "--weights", str(tmp_path / "hf"),
                      "--query", "10,10", "--with", "overlay")
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "a.png")).shape == (128, 288, 3)


def test_outputs_are_bit_identical_with_and_without_capture_and_the_normal_path_is_untouched(model):
    x = _image(64, 128, seed=5)
    modules = [attention_module(model, r) for r in ALL_BLOCKS]
    assert all(m.fused_attn for m in modules)  # timm's fused attention stays the normal path
    with torch.no_grad():
        plain = model(x)
    captured, _ = _capture(model, x)
    assert torch.equal(plain.seg_logits, captured.seg_logits) and torch.equal(plain.depth, captured.depth)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)  # nothing left behind
    # through the engine: the same class and depth maps, maps only when asked
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8))
    normal = InferenceEngine(torch_network(model, torch.device("cpu"), "fp32"))(frames)
    asked = InferenceEngine(torch_network(model, torch.device("cpu"), "fp32"),
                            attention=AttentionRequest((BlockRef(2, 1),)))(frames)
    assert normal.attention is None and len(asked.attention) == 2 and set(asked.attention[1]) == {BlockRef(2, 1)}
    assert torch.equal(normal.classes, asked.classes) and torch.equal(normal.depth, asked.depth)


def test_the_default_block_is_each_stages_last():
    assert select_blocks((2, 2, 2, 2), (1, 2, 5, 8), None, None, MEAN) == tuple(BlockRef(s, 2) for s in (1, 2, 3, 4))
    assert select_blocks((3, 4, 6, 3), (1, 2, 5, 8), 3, None, 5) == (BlockRef(3, 6),)
    assert select_blocks((3, 4, 6, 3), (1, 2, 5, 8), 2, 1, 1) == (BlockRef(2, 1),)


def test_without_queries_only_the_received_map_is_kept(model):
    _, maps = _capture(model, _image(64, 64), blocks=(BlockRef(1, 2),), queries=False)
    att = maps[BlockRef(1, 2)]
    assert att.q is None and att.received.shape == (1, 2, 2)
    with pytest.raises(ValueError, match="not kept"):
        att.query_map((0, 0))


# ----------------------------------------------------------------------------- geometry


def test_a_padded_fit_maps_key_cells_and_queries_to_the_right_pixels():
    # a 60x200 frame at scale 1 in a 96x224 input: 16 rows of padding above, 12 columns left
    fit = FrameFit((60, 200), (96, 224), content=(16.0, 12.0, 60.0, 200.0))
    key = np.zeros((3, 7), np.float32)
    key[1, 3] = 1.0  # input rows 32..63, columns 96..127 -> frame rows 16..47, columns 84..115
    frame = fit.key_to_frame(key, 32)
    assert frame.shape == (60, 200)
    y, x = np.unravel_index(np.argmax(frame), frame.shape)
    assert 16 <= y < 48 and 84 <= x < 116
    assert abs(frame[31:33, 99:101].mean() - 1.0) < 0.05  # the cell centre (input 47.5, 111.5) is the peak
    assert fit.token((100, 30), 4, (24, 56)) == (11, 28)  # input (112.5, 46.5)
    assert fit.token((199, 59), 32, (3, 7)) == (2, 6)


def test_a_stretched_fit_follows_the_preprocess():
    fit = fit_for((300, 500), (256, 448))  # -> 256 x 416: x scaled by 0.832, y by 0.853
    assert fit.input_hw == Preprocessor((256, 448)).input_size((300, 500)) == (256, 416)
    assert fit.token((499, 299), 32, (8, 13)) == (7, 12)
    assert fit.token((320, 120), 8, (32, 52)) == (math.floor((120.5 * 256 / 300) / 8), math.floor((320.5 * 416 / 500) / 8))


def _engineered_attention(model, frame: np.ndarray, box):
    """Set stage 1 block 1 so that queries like the distinct patch attend to the key most like it and the rest
    away from it. The patch's query token and key cell are found from the data (most unlike the median), never
    from the geometry under test."""
    ref = BlockRef(1, 1)
    attn = attention_module(model, ref)
    seen = {}
    hooks = [attn.register_forward_pre_hook(lambda m, args: seen.update(z=args[0][0])),
             attn.norm.register_forward_hook(lambda m, args, out: seen.update(zk=out[0]))]
    engine = InferenceEngine(torch_network(model, torch.device("cpu"), "fp32"), attention=AttentionRequest((ref,)))
    images = Preprocessor(box)(_frame_of(frame))[None]
    try:
        engine(images)
    finally:
        for hk in hooks:
            hk.remove()
    z, zk = seen["z"], seen["zk"]

    def distinct(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        med = t.median(dim=0).values
        return t[(t - med).norm(dim=1).argmax()], med

    zp, zbg = distinct(z)
    kp, kbg = distinct(zk)
    v, u = F.normalize(zp - zbg, dim=0), F.normalize(kp - kbg, dim=0)
    c = attn.q.in_features
    margin = float((v @ zp) * (u @ kp - u @ kbg)) / math.sqrt(attn.head_dim)
    with torch.no_grad():
        attn.q.weight.copy_(torch.outer(u, v) * (30.0 / margin))  # q_i = u (v . z_i): sign says patch or not
        attn.q.bias.zero_()
        attn.kv.weight[:c].copy_(torch.eye(c))  # k_m = the key token itself
        attn.kv.bias[:c].zero_()
    return engine(images).attention[0][ref]


def _frame_of(image: np.ndarray):
    from segformer3d_rt.pipeline.frames import Frame

    return Frame(index=0, image=image, pts=0.0, t_capture=0.0)


def test_a_querys_map_lands_on_the_distinct_patch_after_fitting():
    torch.manual_seed(1)
    model = build_model("b0").eval()
    box = (256, 448)  # a 300 x 500 frame is fitted to 256 x 416: x scaled by 0.832, y by 0.853
    frame = np.full((300, 500, 3), 110, np.uint8)
    # the one distinct patch fills key cell (3, 8) of the input, rows 96..127 and columns 256..287, which are
    # source rows 112.5..150 and columns 307.7..346.2
    frame[113:150, 308:346] = 255
    att = _engineered_attention(model, frame, box)
    fit = fit_for(frame.shape[:2], box)
    on_patch, key_map = frame_map(att, fit, MEAN, (327, 131))
    assert key_map.max() > 0.9  # sharp: the patch's key cell takes nearly all of the query's attention
    y, x = np.unravel_index(np.argmax(on_patch), on_patch.shape)
    assert 113 <= y < 150 and 308 <= x < 346, (x, y)
    assert on_patch[128:135, 323:331].min() > 0.8 * key_map.max()  # the cell's centre is the patch's centre
    elsewhere, bg_keys = frame_map(att, fit, MEAN, (60, 250))  # a query on the plain background looks away
    assert bg_keys[3, 8] < 1e-3 * bg_keys.max() and elsewhere[131, 327] < 0.25 * elsewhere.max()
    # the panel marks the query where it was given
    r = AttentionRenderer((BlockRef(1, 1),), MEAN, QueryPoint((327, 131)), box)
    canvas = r(frame, {BlockRef(1, 1): att})
    assert canvas.shape == frame.shape
    assert (canvas[131, 327 - 14:327 - 5] > 240).all()  # the marker's white cross arm left of the query


# ----------------------------------------------------------------------------- view


def test_grid_with_panels_layout_and_clicks_move_the_query(model):
    engine = InferenceEngine(torch_network(model, torch.device("cpu"), "fp32"),
                             attention=AttentionRequest(tuple(BlockRef(s, 2) for s in (1, 2, 3, 4))))
    image = np.random.default_rng(2).integers(0, 256, (72, 120, 3), dtype=np.uint8)
    box = (64, 96)
    result = engine(Preprocessor(box)(_frame_of(image))[None])
    from segformer3d_rt.pipeline.render import RenderStyle

    st = RenderStyle(palette=np.asarray(model.meta.palette, np.uint8), class_names=model.meta.class_names)
    query = QueryPoint()
    r = AttentionRenderer(tuple(BlockRef(s, 2) for s in (1, 2, 3, 4)), MEAN, query, box, beside=("overlay",),
                          render_style=st)
    canvas = r(image, result.attention[0], result.classes[0].numpy(), result.depth[0].numpy(), hud_lines=["1 FPS"])
    assert canvas.shape == (144, 360, 3)  # 2 x 2 maps + a column: the overlay over the plain frame
    np.testing.assert_array_equal(canvas[72:, 240:], image)  # no query yet: the plain frame, unmarked
    r.click((120 + 30, 72 + 20))  # a click on the stage-4 panel: the same source pixel on every panel
    assert query.get() == (30, 20)
    marked = r(image, result.attention[0], result.classes[0].numpy(), result.depth[0].numpy())
    assert not np.array_equal(marked[72:, 240:], image)
    r.click(None)
    assert query.get() is None


def test_the_window_reports_clicks_in_rendered_pixels():
    from segformer3d_rt.pipeline.sinks.display import DisplaySink

    got = []
    sink = object.__new__(DisplaySink)  # no window needed for the coordinate mapping
    sink._on_click, sink._scale = got.append, 2.0
    sink._mouse(cv2.EVENT_LBUTTONDOWN, 100, 40, 0, None)
    sink._mouse(cv2.EVENT_MOUSEMOVE, 1, 1, 0, None)
    sink._mouse(cv2.EVENT_RBUTTONDOWN, 5, 5, 0, None)
    assert got == [(200, 80), None]


# ----------------------------------------------------------------------------- commands


def _main(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def _write_video(path, n: int = 6, hw=(72, 120), fps: int = 10) -> None:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = hw[1], hw[0], "yuv420p"
        for i in range(n):
            img = np.zeros((*hw, 3), np.uint8)
            img[:, :, 0] = np.linspace(0, 255, hw[1], dtype=np.uint8)[None]
            img[10 + 3 * i:30 + 3 * i, 20:50] = 255
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize("flags, message", [
    (["--stage", "5"], "--stage 5: MiT has stages 1-4"),
    (["--stage", "2", "--block", "3"], "--block 3: stage 2 of this checkpoint has 2 block(s)"),
    (["--block", "0"], "numbered from 1"),
    (["--stage", "1", "--head", "2"], "--head 2: stage 1 has 1 head(s)"),
    (["--stage", "4", "--head", "9"], "--head 9: stage 4 has 8 head(s)"),
    (["--head", "2"], "in the four-stage grid"),
    (["--head", "first"], "--head wants a head number"),
    (["--query", "120,5"], "--query 120,5 is outside the 120x72 frame"),
    (["--query", "3"], "--query wants X,Y"),
    (["--with", "seg"], "unknown --with 'seg'; choose one of overlay, depth"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, flags, message):
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.full((72, 120, 3), 90, np.uint8))
    out = tmp_path / "out.png"
    code, err = _main(capsys, "attention", str(image), "-o", str(out), "--input-size", "64x96", *flags)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("out*"))  # nothing written


def test_run_view_attention_rejects_bad_input_before_any_work(tmp_path, capsys):
    code, err = _main(capsys, "run", "synthetic:size=64x96,frames=2", "--view", "attention", "--stage", "5",
                      "-o", str(tmp_path / "o"))
    assert code == 2 and "--stage 5" in err and len(err.strip().splitlines()) == 1
    code, err = _main(capsys, "run", "synthetic:size=64x96,frames=2", "--stage", "2", "-o", str(tmp_path / "o"))
    assert code == 2 and "need --view attention" in err
    code, err = _main(capsys, "run", "synthetic:size=64x96,frames=2", "--view", "attention", "--stage", "3",
                      "--block", "7", "-o", str(tmp_path / "o"))
    assert code == 2 and "--block 7" in err
    code, err = _main(capsys, "run", "synthetic:size=64x96,frames=2", "--view", "attention", "--backend", "openvino",
                      "-o", str(tmp_path / "o"))
    assert code == 2 and "needs the torch backend" in err
    assert not (tmp_path / "o").exists()


def test_the_command_writes_a_picture_of_a_real_photo(shared_data, tmp_path, capsys):
    photo = sorted((shared_data / "camvid" / "val").glob("*.png"))[:1] or \
        sorted((shared_data / "camvid" / "train").glob("*.jpg"))[:1]
    if not photo:
        pytest.skip("no CamVid image in the shared data")
    src = cv2.imread(str(photo[0]))
    out = tmp_path / "attn.png"
    code, err = _main(capsys, "attention", str(photo[0]), "-o", str(out), "--stage", "3", "--head", "2",
                      "--query", "200,150", "--with", "overlay,depth", "--input-size", "128x160")
    assert code == 0, err
    pic = cv2.imread(str(out))
    assert pic.shape == (src.shape[0], 3 * src.shape[1], 3)  # map | overlay | depth


def test_the_command_writes_video_gif_and_folders(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    _write_video(clip)
    for name in ("maps.mp4", "maps.gif"):
        out = tmp_path / name
        code, err = _main(capsys, "attention", str(clip), "-o", str(out), "--query", "35,20", "--stage", "1",
                          "--input-size", "64x96")
        assert code == 0, err
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 6 and frames[0].shape[:2] == (72, 120)
        assert not list(tmp_path.glob("*.partial"))
    # a folder of images -> one PNG each, named after the inputs; the grid beside both heads' outputs
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.jpg"), np.random.default_rng(i).integers(0, 256, (64, 80, 3), np.uint8))
    code, err = _main(capsys, "attention", str(photos), "-o", str(tmp_path / "maps"), "--with", "overlay",
                      "--with", "depth", "--input-size", "64x96")
    assert code == 0, err
    pngs = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert pngs == ["p0.png", "p1.png"]
    assert cv2.imread(str(tmp_path / "maps" / "p0.png")).shape == (128, 240, 3)
    # a picture of one frame of the video; the source is never written over
    code, err = _main(capsys, "attention", str(clip), "-o", str(tmp_path / "f3.png"), "--frame", "3",
                      "--input-size", "64x96")
    assert code == 0 and cv2.imread(str(tmp_path / "f3.png")).shape == (144, 240, 3)
    code, err = _main(capsys, "attention", str(clip), "-o", str(clip), "--input-size", "64x96")
    assert code == 2 and "overwrite" in err
    code, err = _main(capsys, "attention", str(clip), "-o", str(tmp_path / "x.png"), "--frame", "40")
    assert code == 2 and "only 6 frame(s)" in err


def test_run_view_attention_writes_the_maps_through_the_pipeline(tmp_path):
    from segformer3d_rt.pipeline.config import RunConfig
    from segformer3d_rt.pipeline.session import execute

    cfg = RunConfig(source="synthetic:seed=2,size=72x120,frames=3", outputs=[str(tmp_path / "o")],
                    view="attention", attention_stage=2, attention_query=(60, 30), attention_with=("depth",),
                    input_size=(64, 96), progress="none", device="cpu").validate()
    code, report = execute(cfg)
    assert code == 0 and report["error"] is None
    files = sorted((tmp_path / "o").iterdir())
    assert len(files) == 3
    assert cv2.imread(str(files[0])).shape == (72, 240, 3)  # map | depth


@pytest.mark.cuda
def test_on_cuda_in_fp16_the_maps_are_distributions_and_the_outputs_unchanged(tmp_path):
    torch.manual_seed(0)
    model = build_model("b0").eval()
    frames = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 128, 256, 3), dtype=np.uint8))
    dev = torch.device("cuda")
    plain = InferenceEngine(torch_network(model, dev, "fp16"), cuda_graphs=False)(frames)
    engine = InferenceEngine(torch_network(model, dev, "fp16"), cuda_graphs=True,
                             attention=AttentionRequest(ALL_BLOCKS))
    assert not engine.cuda_graphs  # hooks need eager runs
    asked = engine(frames)
    assert torch.equal(plain.classes, asked.classes) and torch.equal(plain.depth, asked.depth)
    for ref, att in asked.attention[1].items():
        assert att.received.device.type == "cpu" and att.received.dtype == torch.float32
        torch.testing.assert_close(att.received.sum(dim=(1, 2)), torch.ones(att.heads), rtol=0, atol=1e-4)
        torch.testing.assert_close(att.query_map((1, 1)).sum(dim=(1, 2)), torch.ones(att.heads), rtol=0, atol=1e-4)
    from segformer3d_rt.pipeline.config import RunConfig
    from segformer3d_rt.pipeline.session import execute

    cfg = RunConfig(source="synthetic:seed=2,size=72x120,frames=3", outputs=[str(tmp_path / "o.mp4")],
                    view="attention", input_size=(64, 96), progress="none", device="cuda").validate()
    code, report = execute(cfg)
    assert code == 0 and report["error"] is None and report["frames"]["out"] == 3
