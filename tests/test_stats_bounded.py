"""Statistics and shape-keyed caches in bounded memory: log-bucket histograms, LRU caches, a pulled dashboard."""
from __future__ import annotations

import gc
import io
import json
import math
import re
import time
import tracemalloc
import weakref
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from rich.console import Console
from rich.live import Live

from segformer3d_rt import build_model, save_checkpoint
from segformer3d_rt.runtime.lru import LRUCache
from segformer3d_rt.pipeline.dashboard import Dashboard
from segformer3d_rt.pipeline.histogram import LogHistogram
from segformer3d_rt.pipeline.stats import STAGES, PipelineStats, summarise

QS = [0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(build_model("b0"), tmp_path_factory.mktemp("weights") / "b0.safetensors")


def lognormal(n: int, seed: int = 0) -> np.ndarray:
    """Frame-time-like data: median 20 ms, a long right tail (seconds)."""
    return np.random.default_rng(seed).lognormal(mean=math.log(0.02), sigma=1.0, size=n)


# ----------------------------------------------------------------------------- histogram precision
def test_percentiles_within_1_percent_of_numpy_on_100k_lognormal_values():
    a = lognormal(100_000)
    h = LogHistogram()
    for x in a:
        h.add(x)
    est = np.array(h.percentiles(QS))
    ref = np.percentile(a, QS)
    rel = np.abs(est / ref - 1)
    assert rel.max() <= 0.01, dict(zip(QS, rel))
    assert rel.max() <= h.rel_error + 1e-9  # the documented bound (0.5%) holds, not only 1%
    # count, sum, min, max are exact
    assert h.count == a.size
    assert h.sum == pytest.approx(math.fsum(a), rel=1e-12)
    assert h.min == a.min() and h.max == a.max()
    assert est[0] == a.min() and est[-1] == a.max()
    # the JSON summary: the same S fields as the exact one, percentiles within 1%
    s, exact = h.summary(), summarise(a)
    assert set(s) == set(exact)
    assert s["count"] == exact["count"] and s["max"] == pytest.approx(exact["max"], rel=1e-12)
    assert s["mean"] == pytest.approx(exact["mean"], rel=1e-9)
    for k in ("p50", "p95", "p99"):
        assert s[k] == pytest.approx(exact[k], rel=0.01), k


def test_add_many_is_add_one_by_one_and_wide_ranges_stay_within_bound():
    rng = np.random.default_rng(3)
    a = np.exp(rng.uniform(math.log(1e-6), math.log(100.0), 50_000))  # 1 us .. 100 s
    one, many = LogHistogram(), LogHistogram()
    for x in a:
        one.add(x)
    many.add_many(a)
    np.testing.assert_array_equal(one._counts, many._counts)
    assert (one.count, one.min, one.max) == (many.count, many.min, many.max)
    rel = np.abs(np.array(many.percentiles(QS)) / np.percentile(a, QS) - 1)
    assert rel.max() <= 0.01


def test_evenly_spaced_millisecond_values_match_the_exact_summary_within_1_percent():
    h = LogHistogram()
    h.add_many([0.001 * i for i in range(1, 101)])  # 1..100 ms, as in test_summaries_and_throughput
    s = h.summary()
    assert s["count"] == 100 and s["max"] == pytest.approx(100.0)
    assert s["p50"] == pytest.approx(50.5, rel=0.01) and s["p99"] == pytest.approx(99.01, rel=0.01)


def test_weighted_add_edge_values_and_empty():
    h = LogHistogram()
    assert h.summary() == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    assert h.percentile(50) is None and h.mean is None
    h.add(0.25, count=4)  # a batch of four frames, its time once per frame
    assert h.count == 4 and h.sum == pytest.approx(1.0)
    assert h.percentiles([0, 50, 99, 100]) == [0.25, 0.25, 0.25, 0.25]  # clamped to [min, max]: exact
    h.add(0.0)  # below the range (a zero duration): underflow bucket, reads back as the exact min
    h.add(1e6)  # above it: overflow bucket, reads back as the exact max
    assert h.percentile(0) == 0.0 and h.percentile(100) == 1e6
    assert 0.25 * 0.995 <= h.percentile(50) <= 0.25 * 1.005
    with pytest.raises(ValueError):
        h.percentile(101)


# ----------------------------------------------------------------------------- bounded memory
@contextmanager
def traced_memory():
    """Python's own count (tracemalloc; numpy reports its buffers to it too) of the memory allocated since the
    block began and still held: ``with traced_memory() as held: ...; a = held(); ...; held() - a``. Only what was
    allocated inside the block counts (memory from before it is not seen being freed)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]

        def held() -> int:
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - base

        yield held
    finally:
        tracemalloc.stop()


@contextmanager
def retained_bytes():
    """The memory allocated inside the block and still held after it: ``with retained_bytes() as grown: ...``,
    then ``grown()``."""
    result: list[int] = []
    with traced_memory() as held:
        yield lambda: result[0]
        result.append(held())


def test_retained_bytes_sees_what_a_growing_list_would_cost():
    """The yardstick of the tests below: a list of the 20,000 figures is ~0.6 MB, far above their bounds."""
    kept = []
    with retained_bytes() as grown:
        for i in range(20_000):
            kept.append(0.001 * i)
    assert grown() > 500_000
    with retained_bytes() as grown:
        for i in range(20_000):
            _ = [0.001 * i]
    assert grown() < 32_000
    with retained_bytes() as grown:  # numpy's buffers are counted too
        kept.append(np.zeros(250_000))
    assert 2_000_000 <= grown() < 2_100_000


def test_histogram_memory_is_fixed_after_a_million_updates():
    h = LogHistogram()
    buckets, nbytes = h.n_buckets, h.nbytes
    assert buckets < 3000 and nbytes < 32_000
    rng = np.random.default_rng(1)
    many = np.concatenate([lognormal(1_000_000, seed=2), [0.0, -1.0, 1e-12, 1e9]])
    one_by_one = rng.lognormal(math.log(0.02), 2.0, 10_000)
    with retained_bytes() as grown:
        h.add_many(many)
        for x in one_by_one:
            h.add(x)
    assert grown() < 32_000  # what the million values would take as values: 8 MB
    assert h.count == 1_000_000 + 4 + 10_000
    assert (h.n_buckets, h.nbytes) == (buckets, nbytes)
    # and the fixed memory still holds the whole stream: percentiles of all of it within the documented bound
    every = np.concatenate([many, one_by_one])
    rel = np.abs(np.array(h.percentiles(QS)) / np.percentile(every, QS) - 1)
    assert rel.max() <= h.rel_error + 1e-9, dict(zip(QS, rel))
    assert h.summary()["count"] == every.size and h.min == -1.0 and h.max == 1e9


def _layout(report: object) -> object:
    """A report's shape: its keys, nested, and the length of every list in it (not the values)."""
    if isinstance(report, dict):
        return {k: _layout(v) for k, v in report.items()}
    if isinstance(report, list):
        return ("list", len(report), [_layout(v) for v in report[:1]])
    return "value"


def test_pipeline_stats_memory_is_fixed_after_a_million_updates():
    st = PipelineStats(window=50)

    def frames(start: int, n: int) -> None:
        for i in range(start, start + n):
            st.frame_in()
            for s in STAGES:
                st.add_stage(s, 0.001 * (1 + i % 7))
            st.frame_out(t_capture=i * 0.04, t_out=i * 0.04 + 0.03 + 0.001 * (i % 5))

    def damage(start: int, n: int) -> None:  # an input damaged all along: one bad packet a second
        for i in range(start, start + n):
            st.damaged(1, float(i), i + 0.04)

    frames(0, 1_000)
    damage(0, 40)
    st.drop("capture", 3)
    early = st.snapshot(source_fps=25.0)
    frames(1_000, 130_000)
    # the last 20,000 frames (140,000 updates) under tracemalloc: a list of any per-frame figure would keep ~0.6 MB
    with retained_bytes() as grown:
        frames(131_000, 20_000)  # 7 updates a frame: over a million updates in all
        damage(40, 1_000)
        st.drop("capture", 3)
    assert grown() < 32_000
    assert len(st.recent_latencies()) == 50  # the HUD ring
    late = st.snapshot(source_fps=25.0)
    # what is reported is as big after 151,000 frames as after 1,000: the same keys, lists of the same length
    assert _layout(late) == _layout(early)
    assert len(json.dumps(late)) < 1.1 * len(json.dumps(early))
    assert late["damage"]["packets_lost"] == late["damage"]["spans_total"] == 1_040
    assert len(late["damage"]["spans"]) == 32 and late["damage"]["spans"][0] == {"from_s": 0.0, "to_s": 0.04,
                                                                                  "packets": 1}
    assert late["frames"]["dropped_by_stage"] == {"capture": 6}
    snap = late
    assert snap["frames"]["in"] == snap["frames"]["out"] == 151_000
    assert snap["throughput_fps"] == pytest.approx(25.0, rel=1e-3)  # exact from first/last output times
    assert snap["latency_ms"]["stages"]["inference"]["count"] == 151_000
    lat = snap["latency_ms"]["capture_to_output"]
    assert lat["max"] == pytest.approx(34.0) and 30.0 <= lat["p50"] <= 34.0
    gaps = snap["frame_interval_ms"]
    assert gaps["count"] == 150_999 and gaps["mean"] == pytest.approx(40.0, rel=1e-6)
    fps, recent_lat = st.recent()
    assert fps == pytest.approx(25.0, rel=0.05) and 30.0 <= recent_lat <= 34.0


# ----------------------------------------------------------------------------- merge
def test_merge_equals_the_combined_data():
    a, b = lognormal(30_000, seed=4), lognormal(20_000, seed=5) * 3.0
    ha, hb, hab = LogHistogram(), LogHistogram(), LogHistogram()
    ha.add_many(a)
    hb.add_many(b)
    hab.add_many(np.concatenate([a, b]))
    merged = ha.copy().merge(hb)
    np.testing.assert_array_equal(merged._counts, hab._counts)
    assert (merged.count, merged.min, merged.max) == (hab.count, hab.min, hab.max)
    assert merged.sum == pytest.approx(hab.sum, rel=1e-12)
    assert merged.percentiles(QS) == hab.percentiles(QS)
    both = np.concatenate([a, b])
    assert np.abs(np.array(merged.percentiles(QS)) / np.percentile(both, QS) - 1).max() <= 0.01
    assert ha.count == a.size  # copy() left the original alone
    with pytest.raises(ValueError):
        ha.merge(LogHistogram(rel_error=0.01))


# ----------------------------------------------------------------------------- LRU cache
def test_lru_evicts_least_recently_used_first():
    c: LRUCache[str, int] = LRUCache(3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    assert c.get("a") == 1  # a hit: a is now the most recent
    c["d"] = 4  # over maxsize: b (least recent) goes
    assert c.keys() == ["c", "a", "d"] and "b" not in c and c.evictions == 1
    assert "c" in c  # membership is not a use ...
    c["e"] = 5  # ... so c goes next
    assert c.keys() == ["a", "d", "e"]
    c["a"] = 10  # re-setting is a use
    c["f"] = 6
    assert c.keys() == ["e", "a", "f"] and len(c) == 3 and c.evictions == 3
    assert c["a"] == 10 and c.keys() == ["e", "f", "a"]  # reading is a use
    assert c.get("zz") is None and c.get("zz", 7) == 7
    with pytest.raises(KeyError):
        c["zz"]
    calls = []
    assert c.get_or_create("e", lambda: calls.append(1) or 0) == 5 and not calls  # hit: no factory
    assert c.keys()[-1] == "e"
    assert c.get_or_create("g", lambda: calls.append(1) or 7) == 7 and calls == [1]
    assert c.keys() == ["a", "e", "g"] and c.evictions == 4
    with pytest.raises(ValueError):
        LRUCache(0)


def test_shape_keyed_caches_are_bounded():
    from segformer3d_rt.pipeline import render
    from segformer3d_rt.pipeline.preprocess import Preprocessor
    from segformer3d_rt.runtime.sizes import model_input_size

    pre = Preprocessor((128, 256))
    for h in range(40, 440, 2):  # 200 frame sizes
        for w in (300, 640):
            assert pre.input_size((h, w)) == model_input_size((h, w), (128, 256))
    assert len(pre.sizes_seen) <= 128 // 32 + 256 // 32 + 2  # bounded by the box, not by the frames
    with retained_bytes() as grown:  # 10,000 more frame sizes (a stream that keeps changing resolution)
        for h in range(40, 5040):
            for w in (300, 641):
                pre.input_size((h, w))
    assert grown() < 32_000 and len(pre.sizes_seen) <= 128 // 32 + 256 // 32 + 2

    # the remap tables of ever new sizes (an image folder): the memory they hold stops at 8 sizes' worth
    rng = np.random.default_rng(0)
    out_hw = (256, 256)  # one table pair: two float32 planes of the output, 0.5 MB

    def enlarge(i: int) -> None:
        img = rng.integers(0, 255, (8 + i, 10 + i % 3, 3), dtype=np.uint8)
        np.testing.assert_array_equal(render.enlarge_nearest(img, out_hw), render.resize_nearest(img, out_hw))

    with traced_memory() as held:
        for i in range(8):
            enlarge(i)
        eight = held()
        for i in range(8, 40):  # 32 more sizes: 16 MB more of tables if they were all kept
            enlarge(i)
        forty = held()
    assert eight > 8 * 2 * 256 * 256 * 4  # the yardstick: 8 sizes' tables are held (the cache does its job) ...
    assert forty - eight < 256_000  # ... and no more than 8


def test_inference_engine_keeps_the_graphs_of_8_shapes_however_many_it_meets(weights, monkeypatch):
    """An image folder of ever new sizes: the engine holds on to the graphs of the 8 most recently used shapes and
    lets the older ones go (freed, not kept); a shape that comes back gets a graph again. On the CPU, with a
    stand-in for CUDA graph capture that replays by running the captured function."""
    from segformer3d_rt.model import load_model
    from segformer3d_rt.pipeline import infer
    from segformer3d_rt.runtime.backends import torch_network

    class Runner:
        def __init__(self, fn, example, **kw) -> None:
            self.fn = fn

        def __call__(self, x):
            return self.fn(x)

    built: list[weakref.ref] = []

    def capture(fn, example, **kw) -> Runner:
        runner = Runner(fn, example)
        built.append(weakref.ref(runner))
        return runner

    monkeypatch.setattr(infer, "CudaGraphRunner", capture)
    engine = infer.InferenceEngine(torch_network(load_model(weights), torch.device("cpu"), "fp32"), cuda_graphs=False)
    engine.cuda_graphs = True  # the graph policy on the CPU: its captures are the stand-in's
    g = torch.Generator().manual_seed(0)
    sizes = [(32, 32), (32, 64), (64, 32), (64, 64), (32, 96), (96, 32), (64, 96), (96, 64), (32, 128), (128, 32)]
    batches = [torch.randint(0, 255, (1, h, w, 3), dtype=torch.uint8, generator=g) for h, w in sizes]

    first = {}

    def run(k: int) -> None:
        out = engine(batches[k])
        a = first.setdefault(k, out)  # a shape's first batch runs eagerly: the reference of the graph's
        assert torch.equal(a.classes, out.classes) and torch.equal(a.depth, out.depth)

    for k in range(len(sizes)):
        run(k)  # first sight: eager
        run(k)  # second: captured, and used
    assert len(built) == 10
    alive = [r() is not None for r in built]
    assert alive == [False] * 2 + [True] * 8  # the 2 oldest were let go
    run(0)  # shape 0 comes back: a graph again, and the least recent (shape 2) goes
    assert len(built) == 11 and built[-1]() is not None and built[2]() is None
    assert [r() is not None for r in built[3:10]] == [True] * 7


@pytest.mark.cuda
def test_cuda_graphs_evicted_least_recent_first_and_rebuilt(weights):
    from segformer3d_rt.model import load_model
    from segformer3d_rt.pipeline.infer import InferenceEngine
    from segformer3d_rt.runtime.backends import torch_network

    dev = torch.device("cuda")
    eager = InferenceEngine(torch_network(load_model(weights), dev, "fp32"), cuda_graphs=False)
    graphed = InferenceEngine(torch_network(load_model(weights), dev, "fp32"), cuda_graphs=True)
    from segformer3d_rt.runtime.cuda_graph import GraphCache

    graphed._graphs = GraphCache(graphed._graphs._build, capture_after=1, maxsize=2)  # capture at first sight
    g = torch.Generator().manual_seed(0)
    shapes = [(1, 64, 128, 3), (2, 64, 128, 3), (1, 96, 128, 3), (1, 64, 128, 3)]
    for shape in shapes:
        x = torch.randint(0, 255, shape, dtype=torch.uint8, generator=g)
        a, b = eager(x), graphed(x)
        assert (a.classes == b.classes).float().mean().item() >= 0.999  # as test_gpu_paths
        assert len(graphed._graphs.graphs) <= 2
    # the first shape was evicted by the third and rebuilt by the fourth
    assert [k[0] for k in graphed._graphs.graphs.keys()] == [shapes[2], shapes[3]]
    assert graphed._graphs.graphs.evictions == 2
    ring = graphed._pinned.values()
    assert len(graphed._pinned) == 3 and all(len(r) == 2 for r in ring)


# ----------------------------------------------------------------------------- dashboard
def _stats_with_frames(n: int) -> PipelineStats:
    st = PipelineStats()
    for i in range(n):
        st.frame_in()
        st.add_stage("decode", 0.0021)
        st.add_stage("preprocess", 0.0011)
        st.add_stage("inference", 0.0123)
        st.add_stage("render", 0.0042)
        st.add_stage("sink", 0.0031)
        st.frame_out(t_capture=i * 0.04, t_out=i * 0.04 + 0.0345)
    return st


def test_dashboard_renders_current_stats():
    st = _stats_with_frames(20)
    console = Console(record=True, width=120, file=io.StringIO())
    dash = Dashboard(st, "rich", total=40, source_fps=25.0, description="clip.mp4", console=console)
    console.print(dash)
    text = console.export_text()
    for name in STAGES:
        assert name in text
    assert "capture→output" in text and "output interval" in text
    assert re.search(r"inference\W+12\.3", text)  # p50 of 12.3 ms
    assert re.search(r"capture→output\W+34\.5", text)
    assert re.search(r"output interval\W+40\.0", text)
    assert "frames in 20 out 20 dropped 0" in text and "25.00 FPS" in text and "20/40" in text
    # rendering again pulls the stats as they are now: nothing was pushed to the view
    for i in range(20, 30):
        st.frame_in()
        st.frame_out(t_capture=i * 0.04, t_out=i * 0.04 + 0.0345)
    console.print(dash)
    text = console.export_text()
    assert "frames in 30 out 30" in text and "30/40" in text


def test_live_pulls_the_dashboard_at_its_own_rate():
    st = _stats_with_frames(5)
    renders = []

    class Counting(Dashboard):
        def __rich__(self):
            renders.append(time.perf_counter())
            return super().__rich__()

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    dash = Counting(st, "rich", total=None, source_fps=None, description="cam", console=console)
    assert dash._live is None
    with dash:  # starts rich.live.Live(dash): its own thread renders it
        assert isinstance(dash._live, Live) and dash._live.get_renderable() is dash
        dash.update()  # nothing to do in rich mode
        time.sleep(0.8)
    assert dash._live is None
    # about REFRESH_PER_SECOND renders a second, none requested by the caller
    assert 2 <= len(renders) <= 2 + 0.8 * Dashboard.REFRESH_PER_SECOND * 2
