"""CUDA orchestration: when graphs are captured and how (thread-local, one pool), which device every piece uses,
what NVENC is told, what the decoder claims, and how the inference stage is timed when nothing synchronises.

The logic is checked on any machine with fakes (a fake graph builder, fake CUDA events, fake codec contexts,
the option mapping as a pure function); tests marked ``cuda`` check the real GPU paths and skip without one."""
from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from segformer3d_rt.runtime.backends import torch_network
from segformer3d_rt.errors import SinkError, UserError
from segformer3d_rt.model import build_model
from segformer3d_rt.pipeline.infer import BatchResult, InferenceEngine, gpu_seconds
from segformer3d_rt.pipeline.runner import DeferredStageTimes
from segformer3d_rt.pipeline.sinks import Mp4Sink, choose_encoder
from segformer3d_rt.pipeline.sinks.encoders import (NVENC_PRESETS, X264_TO_NVENC_PRESET, encoder_options,
                                                    nvenc_preset)
from segformer3d_rt.pipeline.sources import open_source
from segformer3d_rt.pipeline.sources.video_file import NVDEC, VideoFileSource, decoder_claim, hwaccel_device
from segformer3d_rt.pipeline.stats import PipelineStats
from segformer3d_rt.runtime.cuda_graph import CudaGraphRunner, GraphCache
from segformer3d_rt.runtime.device import cuda_index, explicit_device

NO_GPU = not torch.cuda.is_available()


# ----------------------------------------------------------------------------------- the shape-seen-twice policy
class FakeRunner:
    def __init__(self, fn, example) -> None:
        self.fn = fn
        self.shape = tuple(example.shape)
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def test_a_shape_is_captured_the_second_time_it_is_seen_and_replayed_after():
    built: list[FakeRunner] = []
    cache = GraphCache(lambda fn, ex: built.append(FakeRunner(fn, ex)) or built[-1])
    x = torch.zeros(2, 3)
    assert cache.runner_for(("a",), lambda t: t, x) is None  # first sight: eager, nothing captured
    assert built == [] and len(cache) == 0
    r = cache.runner_for(("a",), lambda t: t, x)  # second: captured now
    assert r is built[0] and len(cache) == 1 and cache.captures == 1
    assert cache.runner_for(("a",), lambda t: t, x) is r  # then replayed, never captured again
    assert cache.captures == 1
    assert cache.runner_for(("b",), lambda t: t, x[:1]) is None  # another shape starts over
    assert len(built) == 1


def test_a_failed_capture_is_said_once_and_every_shape_then_runs_eagerly(caplog):
    attempts = []

    def build(fn, ex):
        attempts.append(ex.shape)
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    cache = GraphCache(build, capture_after=1)
    with caplog.at_level("WARNING"):
        assert cache.runner_for(("a",), None, torch.zeros(1)) is None  # eager, the run goes on
        assert cache.runner_for(("b",), None, torch.zeros(2)) is None  # never tried again
    assert len(attempts) == 1 and len(cache) == 0
    assert cache.failed == "operation not permitted when stream is capturing"
    warnings = [r.getMessage() for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warnings) == 1 and "eagerly" in warnings[0]


def test_capture_policy_bounds_and_first_sight_option():
    built = []
    cache = GraphCache(lambda fn, ex: built.append(ex.shape) or object(), capture_after=1, maxsize=2)
    for key in ("a", "b", "c"):
        assert cache.runner_for(key, None, torch.zeros(1)) is not None  # capture_after=1: at once
    assert len(cache) == 2 and cache.keys() == ["b", "c"]  # LRU bound
    with pytest.raises(ValueError):
        GraphCache(lambda fn, ex: None, capture_after=0)


def _tiny_engine(**kw) -> InferenceEngine:
    torch.manual_seed(0)
    return InferenceEngine(torch_network(build_model("b0"), torch.device("cpu"), "fp32"), **kw)


def test_engine_runs_a_new_shape_eagerly_and_uses_the_graph_from_its_second_batch():
    """The engine's wiring of the policy, on CPU with a fake builder in place of CUDA graph capture."""
    engine = _tiny_engine(cuda_graphs=False)
    eager = [engine(torch.randint(0, 255, (2, 64, 128, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)))
             for i in range(3)]
    built: list[FakeRunner] = []
    engine.cuda_graphs = True
    engine._graphs = GraphCache(lambda fn, ex: built.append(FakeRunner(fn, ex)) or built[-1])
    out = []
    for i in range(3):
        batch = torch.randint(0, 255, (2, 64, 128, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        out.append(engine(batch))
        assert len(built) == (0 if i == 0 else 1)  # nothing captured for the first batch of a shape
    assert built[0].shape == (2, 64, 128, 3) and built[0].calls == 2
    for a, b in zip(eager, out):
        assert torch.equal(a.classes, b.classes) and torch.allclose(a.depth, b.depth)
    engine(torch.zeros(1, 64, 128, 3, dtype=torch.uint8))  # a last short batch: eager, no capture
    assert len(built) == 1 and len(engine._graphs) == 1


def test_engine_refuses_graphs_off_cuda_and_times_nothing_on_the_host_path():
    with pytest.raises(UserError, match="CUDA graphs need a CUDA device"):
        _tiny_engine(cuda_graphs=True)
    engine = _tiny_engine(keep_on_device=True)
    r = engine(torch.zeros(1, 64, 128, 3, dtype=torch.uint8))
    assert r.timing is None  # CPU work is synchronous: its wall time is its time


class FakeCuda:
    """Just enough of CUDA for :class:`CudaGraphRunner` on a CPU tensor, with the one rule that matters here, that of
    cudaStreamCaptureMode (as torch.cuda.graph documents it): while a capture is underway a potentially unsafe
    call (cudaMalloc, a synchronise) fails in *every* thread under "global" (torch's default), only in the
    capturing thread under "thread_local", nowhere under "relaxed"; any other mode is refused, as CUDA does."""

    MODES = ("global", "thread_local", "relaxed")

    def __init__(self) -> None:
        self.capture: tuple[int, str] | None = None  # (capturing thread, mode) while a capture is underway

    def unsafe_call(self, what: str) -> None:
        if self.capture is None:
            return
        thread, mode = self.capture
        if mode == "global" or (mode == "thread_local" and threading.get_ident() == thread):
            raise RuntimeError(f"{what}: operation not permitted when stream is capturing")

    def install(self, monkeypatch) -> None:
        cuda = self

        class Stream:
            def __init__(self, device=None) -> None:
                self.device = device

            def wait_stream(self, other) -> None:
                pass

        class Graph:
            def replay(self) -> None:
                pass

        class graph:  # torch.cuda.graph's signature, torch's default mode included
            def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="global") -> None:
                if capture_error_mode not in cuda.MODES:
                    raise RuntimeError(f"unknown capture mode {capture_error_mode!r}")
                self.mode = capture_error_mode

            def __enter__(self) -> None:
                cuda.unsafe_call("synchronize")  # torch.cuda.graph synchronises on entry, before capturing
                cuda.capture = (threading.get_ident(), self.mode)

            def __exit__(self, *exc) -> None:
                cuda.capture = None

        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device))
        monkeypatch.setattr(torch.cuda, "stream", lambda s: ExitStack())
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)


def _capture_beside_a_render_thread(cuda: FakeCuda, **runner_kw) -> tuple[dict[str, str], CudaGraphRunner, list[bool]]:
    """Capture ``2x`` while a second thread (the render/NVENC threads of a run) allocates mid-capture, then the
    capturing thread tries the same: what each got ("ok" or the error), the runner, and how often fn ran."""
    seen: dict[str, str] = {}
    in_capture, other_done = threading.Event(), threading.Event()

    def attempt(who: str) -> None:
        try:
            cuda.unsafe_call("cudaMalloc")
            seen[who] = "ok"
        except RuntimeError as e:
            seen[who] = str(e)

    def render_thread() -> None:
        if in_capture.wait(10):
            attempt("other")
        other_done.set()

    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(cuda.capture is not None)
        if cuda.capture is not None:  # the capture itself: hold it open until the other thread has tried
            in_capture.set()
            other_done.wait(10)
            attempt("own")
        return x * 2

    t = threading.Thread(target=render_thread)
    t.start()
    try:
        runner = CudaGraphRunner(fn, torch.arange(4.0), **runner_kw)
    finally:
        in_capture.set()
        t.join(10)
    return seen, runner, calls


def test_a_capture_leaves_the_other_threads_free_to_use_the_gpu(monkeypatch):
    """What thread-local capture buys a running pipeline: the render thread's allocations and synchronising copies
    go through while the inference thread captures (under torch's default mode they fail and break the run)."""
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    seen, runner, calls = _capture_beside_a_render_thread(cuda)
    assert seen["other"] == "ok"  # the other thread's cudaMalloc went through mid-capture
    assert "not permitted" in seen["own"]  # the capturing thread itself is still held to the capture rules
    assert calls == [False, False, False, True]  # three warm-ups outside the capture, then the captured run
    assert torch.equal(runner.static_out, torch.arange(4.0) * 2) and cuda.capture is None
    # the same capture under torch's own default is what would break: the test can tell the two apart
    seen, _, _ = _capture_beside_a_render_thread(cuda, capture_error_mode="global")
    assert "not permitted" in seen["other"]


# ----------------------------------------------------------------------------------- device index propagation
def test_device_index_for_every_device_spelling():
    assert cuda_index(torch.device("cpu")) is None and cuda_index(None) is None
    assert cuda_index("cuda:1") == 1 and cuda_index(torch.device("cuda", 3)) == 3
    expected = torch.cuda.current_device() if torch.cuda.is_available() else 0
    assert cuda_index("cuda") == expected
    assert explicit_device("cuda") == torch.device("cuda", expected)
    assert explicit_device("cuda:2") == torch.device("cuda:2") and explicit_device("cpu") == torch.device("cpu")


def test_nvdec_device_argument_reaches_pyav():
    from av.codec.hwaccel import HWAccel

    assert hwaccel_device(None) is None and hwaccel_device(0) == "0" and hwaccel_device(1) == "1"
    with pytest.raises(ValueError):
        hwaccel_device(-1)
    # PyAV's own parsing of it: the CUDA device id the hardware context is created on
    assert HWAccel("cuda", device=hwaccel_device(1), allow_software_fallback=True).device_id == 1
    assert HWAccel("cuda", device=hwaccel_device(None)).device_id == 0


def _small_mp4(path: Path, n: int = 4) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            img = np.full((48, 64, 3), 20 * i, np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    return path


def _one_gpu_ffmpeg(monkeypatch) -> None:
    """FFmpeg on a machine with one NVIDIA GPU (device 0), as far as opening goes: its CUDA hwdevice is created
    on the device PyAV's HWAccel names, and an ordinal past the last GPU fails as cuDeviceGet does. With a GPU
    that exists the file opens (in software here: no hardware frames can be faked), and the source then says
    NVDEC was not attached for this stream."""
    real_open = av.open

    def fake_open(path, *args, hwaccel=None, **kw):
        if hwaccel is not None and hwaccel.device_id >= 1:
            raise av.error.ExternalError(-542398533, "cuDeviceGet failed: CUDA_ERROR_INVALID_DEVICE: invalid "
                                                     "device ordinal")
        return real_open(path, *args, **kw)

    monkeypatch.setattr("av.codec.hwaccel.hwdevices_available", lambda: ["cuda"])
    monkeypatch.setattr(av, "open", fake_open)


def test_open_source_passes_the_run_gpu_to_nvdec(tmp_path, monkeypatch):
    clip = _small_mp4(tmp_path / "c.mp4")
    _one_gpu_ffmpeg(monkeypatch)
    claims = {}
    for gpu in (None, 0, 1):
        with open_source(str(clip), hwaccel=True, hw_device=gpu) as src:
            frames = list(src.frames())
            claims[gpu] = src.decoder
        assert len(frames) == 4 and frames[3].image.mean() == pytest.approx(60, abs=2)  # decoded all the same
    # GPU 1 does not exist on this (fake) machine: only a device index that reached FFmpeg can fail so
    assert "software" in claims[1] and "invalid device ordinal" in claims[1]
    for gpu in (None, 0):  # GPU 0 exists: the hwdevice was made, the stream itself decodes in software
        assert "invalid device ordinal" not in claims[gpu] and "unavailable for this stream" in claims[gpu]


def test_nvenc_gets_the_run_gpu(tmp_path, monkeypatch):
    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    # the sink opens the encoder at construction, which needs that GPU: only the option mapping is checked here
    monkeypatch.setattr("segformer3d_rt.pipeline.sinks.mp4.check_encoder", lambda *a, **k: None)
    sink = Mp4Sink(tmp_path / "o.mp4", fps=25.0, codec="h264_nvenc", crf=23, preset="medium", gpu=1)
    try:  # the encoder only opens with the first frame: the options are checked without a GPU
        assert sink._options["gpu"] == "1"
        assert "gpu=1" in sink.quality
    finally:
        sink.close()


def test_session_opens_sinks_on_the_run_gpu_and_says_what_quality_is_used(tmp_path, caplog, monkeypatch):
    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    monkeypatch.setattr("segformer3d_rt.pipeline.sinks.mp4.check_encoder", lambda *a, **k: None)  # needs GPU 1
    from segformer3d_rt.pipeline.config import RunConfig
    from segformer3d_rt.pipeline.session import open_sinks

    from segformer3d_rt.pipeline.sources.base import Source

    class Clip(Source):  # what the session asks of a source, declared by Source itself
        fps, time_base = 25.0, Fraction(1, 25)

        def frames(self):
            return iter(())

        def close(self) -> None:
            pass

    cfg = RunConfig(source="x", outputs=[str(tmp_path / "o.mp4")], codec="h264_nvenc", crf=20, preset="slow")
    with caplog.at_level(logging.INFO, logger="segformer3d_rt.pipeline.session"), ExitStack() as stack:
        sinks, _, _, encoders = open_sinks(cfg, Clip(), stack, cuda=True, gpu=1)
        assert len(encoders) == 1 and "cq=20" in encoders[0]
        assert sinks[0]._options == {"preset": "p5", "rc": "vbr", "cq": "20", "b": "0", "tune": "hq", "gpu": "1"}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encode o.mp4:")]
    assert len(lines) == 1
    assert "cq=20" in lines[0] and "preset=p5" in lines[0] and "gpu=1" in lines[0]


@pytest.mark.skipif(not NO_GPU, reason="checks the fallback on a machine without an NVIDIA GPU")
def test_nvenc_probe_on_a_gpu_index_falls_back_without_a_gpu():
    name, note = choose_encoder("auto", prefer_hardware=True, gpu=1)
    assert name == "libx264" and "h264_nvenc" in note and "software" in note


# ----------------------------------------------------------------------------------- encoder quality options
def test_x264_family_takes_crf_and_preset_as_given():
    for codec in ("libx264", "libx265"):
        opts, note = encoder_options(codec, 18, "slow")
        assert opts == {"crf": "18", "preset": "slow"}
        assert "crf 18" in note and "preset slow" in note
        opts, note = encoder_options(codec, 18, "slow", bitrate=True)
        assert opts == {"preset": "slow"} and "ignored" in note
    assert encoder_options("libx264", None, None)[0] == {}
    assert encoder_options("libx264", 23, "nosuchpreset")[0]["preset"] == "nosuchpreset"  # x264 refuses it on open


def test_nvenc_maps_crf_to_constant_quality_and_x264_presets_to_p1_p7():
    opts, note = encoder_options("h264_nvenc", 23, "medium", gpu=0)
    assert opts == {"preset": "p4", "rc": "vbr", "cq": "23", "b": "0", "tune": "hq", "gpu": "0"}
    assert note.startswith("h264_nvenc quality:") and "cq=23" in note and "from --crf 23 --preset medium" in note
    assert encoder_options("hevc_nvenc", 30, "ultrafast")[0] == {"preset": "p1", "rc": "vbr", "cq": "30", "b": "0",
                                                               "tune": "hq"}
    assert encoder_options("h264_nvenc", 0, "veryslow")[0] == {"preset": "p7", "rc": "constqp", "qp": "0",
                                                             "tune": "lossless"}
    assert encoder_options("h264_nvenc", 23, None, bitrate=True)[0] == {"rc": "vbr", "tune": "hq"}
    assert encoder_options("h264_nvenc", 23, "p6")[0]["preset"] == "p6"  # NVENC's own names pass through
    order = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
    levels = [int(nvenc_preset(n)[1]) for n in order]
    assert levels[0] == 1 and levels[-1] == 7 and levels == sorted(levels)
    with pytest.raises(SinkError, match="NVENC"):
        nvenc_preset("nosuchpreset")


def test_nvenc_options_are_ones_this_ffmpeg_accepts():
    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no h264_nvenc")
    supported = av.CodecContext.create("h264_nvenc", "w").supported_options
    private = {o.name: o for o in supported.private}
    generic = {o.name for o in supported.generic}
    for crf, preset, bitrate in ((23, "medium", False), (0, "placebo", False), (None, "fast", True)):
        opts, _ = encoder_options("h264_nvenc", crf, preset, bitrate=bitrate, gpu=1)
        for k, v in opts.items():
            assert k in private or k in generic, k
            choices = [c.name for c in (private[k].choices or [])] if k in private else []
            if choices and k != "gpu":  # gpu: an integer with two named values (any, list)
                assert v in choices, (k, v, choices)
    assert {c.name for c in private["preset"].choices} >= NVENC_PRESETS
    assert set(X264_TO_NVENC_PRESET.values()) <= NVENC_PRESETS


def test_other_encoders_get_neither_and_the_line_says_so():
    opts, note = encoder_options("mpeg4", 23, "medium")
    assert opts == {} and "not applied" in note
    assert encoder_options("mpeg4", None, None) == ({}, "mpeg4 quality: encoder defaults")


# ----------------------------------------------------------------------------------- the decoder's claim
def test_decoder_claim_needs_hardware_frames_not_just_an_attached_device():
    assert decoder_claim("h264", hw_attached=False) == "h264 (software)"
    assert "no CUDA hwaccel" in decoder_claim("h264", hw_attached=False, reason="this FFmpeg build has no CUDA hwaccel")
    pending = decoder_claim("h264", hw_attached=True, decoded=False)
    assert "CUDA" not in pending and "software" not in pending and "unconfirmed" in pending
    assert decoder_claim("h264", hw_attached=True, context_format="cuda", frame_format="nv12") == NVDEC
    assert decoder_claim("h264", hw_attached=True, frame_format="cuda") == NVDEC  # frames kept on the device
    fell_back = decoder_claim("h264", hw_attached=True, context_format="yuv420p", frame_format="yuv420p")
    assert "software" in fell_back and "fell back" in fell_back and "yuv420p" in fell_back and "CUDA" not in fell_back


def _fake_container(is_hwaccel: bool, fmt: str | None):
    ctx = SimpleNamespace(is_hwaccel=is_hwaccel, name="h264",
                          format=SimpleNamespace(name=fmt) if fmt else None)
    return SimpleNamespace(streams=SimpleNamespace(video=[SimpleNamespace(codec_context=ctx)]))


def test_source_confirms_the_decoder_from_the_first_frame(tmp_path):
    clip = _small_mp4(tmp_path / "c.mp4")
    with VideoFileSource(clip) as src:
        real = src._container
        frame = SimpleNamespace(format=SimpleNamespace(name="nv12"))
        src._container = _fake_container(True, "yuv420p")  # CUDA offered, FFmpeg chose software
        src._confirm_decoder(frame)
        assert "software" in src.decoder and "fell back" in src.decoder
        src._container = _fake_container(True, "cuda")
        src._confirm_decoder(frame)
        assert src.decoder == NVDEC
        src._container = real


@pytest.mark.skipif(not NO_GPU, reason="checks the fallback on a machine without an NVIDIA GPU")
def test_hw_decode_request_without_a_gpu_says_software_before_and_after_frames(tmp_path):
    clip = _small_mp4(tmp_path / "c.mp4")
    with VideoFileSource(clip, hwaccel=True, hw_device=1) as src:
        assert "software" in src.decoder
        assert len(list(src.frames())) == 4
        assert "software" in src.decoder and "CUDA (NVDEC)" != src.decoder


# ----------------------------------------------------------------------------------- stage time without a sync
class FakeEvent:
    def __init__(self, t_ms: float = 0.0, done: bool = False) -> None:
        self.t_ms, self.done, self.synced = t_ms, done, False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.synced, self.done = True, True

    def elapsed_time(self, end: "FakeEvent") -> float:
        return end.t_ms - self.t_ms


def test_deferred_stage_times_book_gpu_time_when_the_work_is_done_without_waiting():
    booked = []
    stats = SimpleNamespace(add_stage=lambda stage, s, frames=1: booked.append((stage, round(s, 6), frames)))
    times = DeferredStageTimes(stats)
    times.add(None, 0.004, 2)  # a synchronous batch: booked at once, host time
    assert booked == [("inference", 0.002, 2)]
    slow = (FakeEvent(0.0), FakeEvent(40.0))  # 40 ms of GPU work, 1 ms to launch
    times.add(slow, 0.001, 4)
    assert len(booked) == 1 and not slow[1].synced  # not done: nothing waits for it
    fast = (FakeEvent(0.0, True), FakeEvent(0.5, True))  # launch-bound: host time counts
    times.add(fast, 0.002, 1)
    assert len(booked) == 1  # in order: behind the unfinished one
    slow[1].done = True
    times.poll()
    assert booked[1:] == [("inference", 0.01, 4), ("inference", 0.002, 1)]
    pending = (FakeEvent(0.0), FakeEvent(3.0))
    times.add(pending, 0.001, 1)
    times.flush()  # the end of the stage waits for the rest
    assert pending[1].synced and booked[-1] == ("inference", 0.003, 1) and len(times) == 0


def test_deferred_stage_times_backlog_is_bounded():
    booked = []
    stats = SimpleNamespace(add_stage=lambda stage, s, frames=1: booked.append(s))
    times = DeferredStageTimes(stats, max_pending=2)
    for _ in range(3):
        times.add((FakeEvent(0.0), FakeEvent(1.0)), 0.0, 1)
    assert len(times) == 2 and len(booked) == 1  # the oldest was waited for


def test_gpu_seconds_is_the_longer_of_host_and_gpu_time():
    assert gpu_seconds(None, 0.25) == 0.25
    assert gpu_seconds((FakeEvent(0.0), FakeEvent(30.0)), 0.001) == pytest.approx(0.03)
    assert gpu_seconds((FakeEvent(0.0), FakeEvent(1.0)), 0.005) == 0.005


def test_pipeline_books_inference_time_from_the_batch_events():
    """The runner hands the result's events to the deferred timer (a fake engine whose results carry them)."""
    from segformer3d_rt.pipeline.frames import Frame
    from segformer3d_rt.pipeline.runner import Pipeline, PipelineParts

    class Engine:
        keep_on_device = False

        def upload(self, images):
            return images

        def run(self, images, size=None):
            n = images.shape[0]
            return BatchResult(torch.zeros(n, 4, 4, dtype=torch.uint8), None,
                               timing=(FakeEvent(0.0, True), FakeEvent(50.0, True)))

    class Pre:
        resize_on_device = False
        sizes_seen: set = set()

        def __call__(self, frame):
            return torch.zeros(4, 4, 3, dtype=torch.uint8)

    class Src:
        def frames(self):
            for i in range(5):
                yield Frame(index=i, image=np.zeros((4, 4, 3), np.uint8), pts=i / 25, t_capture=0.0)

    class Sink:
        def write(self, frame, rendered):
            pass

    stats = PipelineStats()
    parts = PipelineParts(source=Src(), preprocess=Pre(), engine=Engine(), render=lambda p, hud: p.frame.image,
                          sinks=[Sink()], live=False, batch_size=2, queue_size=4, hud=False)
    pipe = Pipeline(parts, stats)
    pipe.start()
    pipe.join()
    assert not pipe.errors
    snap = stats.snapshot()
    inf = snap["latency_ms"]["stages"]["inference"]
    # each batch: 50 ms of (fake) GPU time over its frames, not its microseconds of host time
    assert inf["p50"] >= 20.0


# ----------------------------------------------------------------------------------- NVIDIA GPU
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "segformer3d-rt-b0-roads.safetensors"


def _net():
    from segformer3d_rt import load_model

    return load_model(WEIGHTS) if WEIGHTS.is_file() else build_model("b0")


@pytest.mark.cuda
def test_capture_succeeds_while_another_thread_launches_kernels():
    dev = torch.device("cuda")
    stop = threading.Event()
    errors: list[BaseException] = []

    def busy() -> None:  # what the render/NVDEC/NVENC threads do: kernels, allocations, synchronising copies
        try:
            a = torch.randn(512, 512, device=dev)
            while not stop.is_set():
                b = a @ a
                torch.empty(1 << 20, device=dev)  # cudaMalloc-able allocation sizes vary
                b.sum().item()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=busy)
    t.start()
    try:
        engine = InferenceEngine(torch_network(_net(), dev, "fp16"), cuda_graphs=True, keep_on_device=True)
        eager = InferenceEngine(torch_network(_net(), dev, "fp16"), cuda_graphs=False)
        batch = torch.randint(0, 255, (2, 128, 256, 3), dtype=torch.uint8)
        for _ in range(4):
            with torch.no_grad():
                out = engine(batch)
        assert len(engine._graphs) == 1 and engine._graphs.captures == 1
        ref = eager(batch)
        assert (out.classes.cpu() == ref.classes).float().mean().item() >= 0.999
        assert out.timing is not None and gpu_seconds(out.timing, 0.0) > 0
    finally:
        stop.set()
        t.join()
    assert not errors, errors


@pytest.mark.cuda
def test_graph_engine_captures_only_repeating_shapes_into_one_pool():
    dev = torch.device("cuda")
    engine = InferenceEngine(torch_network(_net(), dev, "fp32"), cuda_graphs=True)
    full = torch.randint(0, 255, (4, 128, 256, 3), dtype=torch.uint8)
    engine(full)
    assert len(engine._graphs) == 0  # first sight: eager
    engine(full)
    engine(full[:3])  # a file's last short batch: eager, never captured
    assert len(engine._graphs) == 1
    engine(full[:3])  # ... unless it comes back: then it gets a graph in the same pool
    first, second = engine._graphs.values()
    assert first.graph.pool() == second.graph.pool() == engine._graph_pool


@pytest.mark.cuda
def test_engine_on_the_second_gpu_keeps_everything_there():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    dev = torch.device("cuda:1")
    before = torch.cuda.memory_allocated(0)
    engine = InferenceEngine(torch_network(_net(), dev, "fp16"), cuda_graphs=True, keep_on_device=True)
    batch = torch.randint(0, 255, (2, 128, 256, 3), dtype=torch.uint8)

    def work() -> BatchResult:  # a stage thread: its current device is 0
        out = None
        for _ in range(3):
            out = engine(batch)
        return out

    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", work()))
    t.start()
    t.join()
    out = box["out"]
    assert out.classes.device == dev and engine.copy_stream.device == dev
    assert engine._capture_stream.device == dev
    (runner,) = engine._graphs.values()
    assert runner.static_in.device == dev
    assert torch.cuda.memory_allocated(0) == before  # nothing landed on GPU 0
    name, note = choose_encoder("auto", prefer_hardware=True, gpu=1)
    if name == "h264_nvenc":
        assert "GPU 1" in note


@pytest.mark.cuda
def test_cudagraph_bench_matches_eager_and_records_no_autograd_state():
    from segformer3d_rt.benchmark.model_only import make_forward, time_forward
    from segformer3d_rt.runtime.backends.fidelity import check_input

    dev = torch.device("cuda")
    model = _net().to(dev).eval()
    x = check_input(model.meta, (256, 512), 2).to(dev)
    graphed = make_forward(model, dev, "fp32", "cudagraph", x)
    folded = make_forward(model, dev, "fp32", "folded", x)
    assert not graphed.static_out.seg_logits.requires_grad  # captured under inference mode
    with torch.inference_mode():
        a = folded(x)
        b = graphed(x)
        torch.testing.assert_close(b.seg_logits, a.seg_logits, rtol=1e-3, atol=1e-3)
        if a.depth is not None:
            torch.testing.assert_close(b.depth, a.depth, rtol=1e-3, atol=1e-3)
    assert len(time_forward(graphed, x, dev, 2, 3)) == 3


@pytest.mark.cuda
def test_nvenc_opens_with_the_mapped_quality_options(tmp_path):
    name, _ = choose_encoder("auto", prefer_hardware=True, gpu=cuda_index("cuda"))
    if name != "h264_nvenc":
        pytest.skip("NVENC does not open here")
    from segformer3d_rt.pipeline.frames import Frame

    out = tmp_path / "n.mp4"
    with Mp4Sink(out, fps=25.0, codec="h264_nvenc", crf=23, preset="fast", gpu=cuda_index("cuda")) as sink:
        for i in range(5):
            sink.write(Frame(index=i, image=np.zeros((128, 256, 3), np.uint8), pts=i / 25, t_capture=0.0),
                       np.full((128, 256, 3), 40 * i, np.uint8))  # NVENC has a minimum size
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


@pytest.mark.cuda
def test_an_uncapturable_forward_falls_back_to_eager_with_the_same_results():
    """A forward with a host sync inside (here .item(), as some custom ops do) cannot be captured: the engine
    says so once and every batch still comes out, equal to a plain eager engine's."""
    dev = torch.device("cuda")
    engine = InferenceEngine(torch_network(_net(), dev, "fp32"), cuda_graphs=True, capture_after=1)
    eager = InferenceEngine(torch_network(_net(), dev, "fp32"), cuda_graphs=False)
    compute = engine._compute

    def syncing(images, size):
        classes, depth = compute(images, size)
        _ = classes.float().mean().item()  # illegal while capturing
        return classes, depth

    engine._compute = syncing
    batch = torch.randint(0, 255, (2, 128, 256, 3), dtype=torch.uint8)
    for _ in range(3):
        out = engine(batch)
    assert engine._graphs.failed is not None and len(engine._graphs) == 0
    ref = eager(batch)
    assert torch.equal(out.classes, ref.classes)


def test_a_gpu_without_nvenc_is_named_on_one_line():
    from segformer3d_rt.pipeline.sinks.encoders import nvenc_unavailable

    # FFmpeg 7's own lines: the first is what an H100 gives, the second a missing driver
    said = nvenc_unavailable("OpenEncodeSessionEx failed: unsupported device (2): (no details)\n", "NVIDIA H100 80GB HBM3")
    assert said.startswith("NVIDIA H100 80GB HBM3 has no NVENC encoder") and "\n" not in said
    assert "unsupported device (2)" in said  # FFmpeg's words stay, for a search
    other = nvenc_unavailable("Cannot load libcuda.so.1", None)
    assert other == "h264_nvenc unavailable: Cannot load libcuda.so.1"


@pytest.mark.cuda
def test_the_encoder_choice_on_this_gpu_is_one_line():
    name, note = choose_encoder("auto", prefer_hardware=True, gpu=0)
    assert "\n" not in note
    gpu = torch.cuda.get_device_name(0)
    if name == "libx264":
        assert "software" in note
        if any(m in gpu for m in ("H100", "H200", "A100")):
            assert "has no NVENC encoder" in note, note
    else:
        assert name == "h264_nvenc" and "NVENC" in note
