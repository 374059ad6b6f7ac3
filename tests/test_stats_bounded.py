"""Statistics and shape-keyed caches in bounded memory: log-bucket histograms, LRU caches, a pulled dashboard."""
from __future__ import annotations

import io
import math
import re
import time
from collections import deque

import numpy as np
import pytest
import torch
from rich.console import Console
from rich.live import Live

from segformer3d_rt import build_model, save_checkpoint
from segformer3d_rt.runtime.cache import LRUCache
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
def test_histogram_memory_is_fixed_after_a_million_updates():
    h = LogHistogram()
    buckets, nbytes = h.n_buckets, h.nbytes
    assert buckets < 3000 and nbytes < 32_000
    rng = np.random.default_rng(1)
    h.add_many(np.concatenate([lognormal(1_000_000, seed=2), [0.0, -1.0, 1e-12, 1e9]]))
    for x in rng.lognormal(math.log(0.02), 2.0, 10_000):
        h.add(x)
    assert h.count == 1_000_000 + 4 + 10_000
    assert (h.n_buckets, h.nbytes, h._counts.shape) == (buckets, nbytes, (buckets,))
    assert int(h._counts.sum()) == h.count


def _footprint(obj: object) -> dict[str, object]:
    """The size of every container a PipelineStats holds (lists would grow; rings and histograms must not)."""
    out: dict[str, object] = {}
    for name, v in vars(obj).items():
        if isinstance(v, LogHistogram):
            out[name] = ("hist", v.n_buckets, v.nbytes)
        elif isinstance(v, deque):
            out[name] = ("ring", len(v), v.maxlen)
        elif isinstance(v, dict):
            out[name] = ("dict", sorted((k, _footprint_value(x)) for k, x in v.items()))
        elif isinstance(v, (list, set, tuple, np.ndarray)):
            out[name] = ("seq", len(v))
    return out


def _footprint_value(x: object) -> object:
    return ("hist", x.n_buckets, x.nbytes) if isinstance(x, LogHistogram) else type(x).__name__


def test_pipeline_stats_memory_is_fixed_after_a_million_updates():
    st = PipelineStats(window=50)

    def frames(start: int, n: int) -> None:
        for i in range(start, start + n):
            st.frame_in()
            for s in STAGES:
                st.add_stage(s, 0.001 * (1 + i % 7))
            st.frame_out(t_capture=i * 0.04, t_out=i * 0.04 + 0.03 + 0.001 * (i % 5))

    frames(0, 1_000)
    st.drop("capture", 3)
    before = _footprint(st)
    frames(1_000, 150_000)  # 7 updates a frame: over a million updates in all
    st.drop("capture", 3)
    after = _footprint(st)
    assert after == before
    assert not any(isinstance(v, list) for v in vars(st).values())
    assert len(st.recent_latencies()) == 50  # the HUD ring
    snap = st.snapshot(source_fps=25.0)
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
    assert len(pre._size_for) == pre._size_for.maxsize == 64
    assert len(pre.sizes_seen) <= 128 // 32 + 256 // 32 + 2  # bounded by the box, not by the frames

    rng = np.random.default_rng(0)
    for i in range(12):
        img = rng.integers(0, 255, (8 + i, 10, 3), dtype=np.uint8)
        out = render.enlarge_nearest(img, (32 + i, 40))
        np.testing.assert_array_equal(out, render.resize_nearest(img, (32 + i, 40)))
    assert len(render._NEAREST_MAPS) <= render._NEAREST_MAPS.maxsize == 8


def test_inference_engine_caches_are_lru(weights):
    from segformer3d_rt.model import load_model
    from segformer3d_rt.pipeline.infer import InferenceEngine

    engine = InferenceEngine(load_model(weights), torch.device("cpu"), None, cuda_graphs=False)
    assert isinstance(engine._graphs.graphs, LRUCache) and engine._graphs.graphs.maxsize == 8
    assert isinstance(engine._pinned, LRUCache) and engine._pinned.maxsize == 4


@pytest.mark.cuda
def test_cuda_graphs_evicted_least_recent_first_and_rebuilt(weights):
    from segformer3d_rt.model import load_model
    from segformer3d_rt.pipeline.infer import InferenceEngine

    dev = torch.device("cuda")
    eager = InferenceEngine(load_model(weights), dev, None, cuda_graphs=False)
    graphed = InferenceEngine(load_model(weights), dev, None, cuda_graphs=True)
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
