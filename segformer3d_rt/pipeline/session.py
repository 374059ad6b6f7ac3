"""One run of the pipeline: build the stages from a RunConfig, run them, return (exit code, report).

Every "auto" is resolved once, here, into a :class:`~segformer3d_rt.pipeline.plan.RunPlan` (logged in one line)
whose values the stages are built with. The report (``execute``'s second value; what ``run --stats-json``
writes) holds ``version``, ``source`` (spec, description, fps, decoder, frame_count, live), ``model`` (weights,
variant, input_box, input_sizes, device, precision, backend, startup_s, batch_size, folded_heads, cuda_graphs,
device_stages), ``plan``, ``outputs``, the statistics snapshot (:meth:`PipelineStats.snapshot`: frames,
throughput, latencies, ...), ``interrupted``, ``error`` and ``config``.
What the command adds around it (signals, the printed summary, the JSON file) is in ``commands/run.py``.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import SinkError, UserError
from ..runtime.backends import Network, open_network
from ..runtime.bundled import default_weights
from ..runtime.device import cuda_index, is_out_of_memory, resolve_device
from ..runtime.media_kinds import output_kind
from ..runtime.sizes import model_input_size
from .config import RunConfig, as_dict
from .dashboard import Dashboard
from .infer import InferenceEngine
from .plan import RunPlan
from .preprocess import Preprocessor
from .runner import Pipeline, PipelineParts
from .stats import PipelineStats

log = logging.getLogger(__name__)


def load_network(cfg: RunConfig, device: torch.device | None = None, threads: int | None = None
                 ) -> tuple[Network, str]:
    """The network --backend picks (the torch model or an exported-network backend; runtime/backends).
    ``threads``: the exported backends' CPU threads (None: every core)."""
    path = Path(cfg.weights) if cfg.weights else default_weights()
    backend = "torch" if cfg.view == "attention" and cfg.backend == "auto" else cfg.backend  # hooks need torch
    device = device if device is not None else resolve_device(cfg.device)
    return (open_network(path, backend, device, cfg.precision, cfg.input_size, cfg.fold_heads, cfg.batch_size,
                         threads=threads), str(path))


class MainThreadDisplay:
    """Hands frames from the sink thread to a window driven by the main thread (GUI toolkits need that)."""

    def __init__(self, window: Any) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._latest: tuple | None = None
        self.stop_requested = False

    def write(self, frame: Any, rendered: np.ndarray) -> None:
        with self._lock:
            self._latest = (frame, rendered)

    def pump(self) -> None:
        with self._lock:
            item, self._latest = self._latest, None
        if item is not None:
            self.window.write(*item)
        else:
            self.window.poll() if hasattr(self.window, "poll") else None
        self.stop_requested = bool(getattr(self.window, "stop_requested", False))

    def close(self) -> None:
        self.window.close()


def open_sinks(cfg: RunConfig, source: Any, stack: ExitStack, cuda: bool = False,
                gpu: int | None = None, on_click: Callable | None = None
                ) -> tuple[list[Any], list[Any], list[str], list[str]]:
    """(sinks, those the main thread drives, output names, one encoder line per video). ``gpu``: the run's CUDA
    device index, where NVENC encodes (None: not a CUDA run). ``on_click``: the window's mouse clicks (canvas
    pixels; the attention view moves its query)."""
    from .sinks import DisplaySink, GifSink, ImageDirSink, Mp4Sink, PictureSink, choose_encoder
    from .sinks.encoders import choose_preset

    sinks: list[Any] = []
    main_thread: list[Any] = []
    names: list[str] = []
    encoders: list[str] = []
    for out in cfg.outputs:
        p = Path(out)
        encoder_line = None
        kind = output_kind(out)
        if kind in ("video", "stdout"):
            audio = source.path if cfg.audio else None
            if audio is not None and not source.reopenable:
                if source.has_audio is not False:
                    log.warning("audio of '%s' not written: a FIFO can be read only once (the video is)", audio)
                audio = None
            codec, note = choose_encoder(cfg.codec, prefer_hardware=cuda, gpu=gpu)
            realtime = source.live if cfg.realtime is None else cfg.realtime
            preset, why = choose_preset(cfg.preset, realtime)
            sink = Mp4Sink(out if kind == "stdout" else p, fps=source.fps or 25.0, time_base=source.time_base, audio_from=audio, codec=codec,
                           crf=cfg.crf, preset=preset, bitrate=cfg.bitrate, gpu=gpu,
                           size=(source.width, source.height))
            encoder_line = f"{note}; {sink.quality}" + (f" ({why})" if cfg.preset is None else "")
        elif kind == "picture":
            sink = PictureSink(p)
        elif kind == "gif":
            sink = GifSink(p, fps=source.fps)
        elif kind == "folder":
            sink = ImageDirSink(p, inputs=source.files)  # names planned from an image source
        else:
            raise UserError(f"output '{out}': unknown kind (a .mp4/.mkv/.mov video, a .png/.jpg picture, a .gif, "
                            "or a folder for one PNG per frame)")
        sinks.append(stack.enter_context(sink))
        names.append(str(p))
        if encoder_line:  # said once the file really opened, so a bad output path gives exactly one line
            log.info("encode %s: %s", p.name, encoder_line)
            encoders.append(f"{p.name}: {encoder_line}")
    if cfg.show:
        try:
            window = stack.enter_context(DisplaySink(on_click=on_click))
        except SinkError as e:
            log.warning("no window: %s", e)
        else:
            adapter = MainThreadDisplay(window)
            sinks.append(adapter)
            main_thread.append(adapter)
            names.append("window")
    return sinks, main_thread, names, encoders


def make_renderer(cfg: RunConfig, meta: Any, device: torch.device | None) -> Any:
    """Host rendering (numpy/cv2), or on ``device`` where only the finished frame is downloaded."""
    from .render import RenderStyle, SmoothedDepthRange, frame_depth_range, render_frame

    try:
        style = RenderStyle(palette=np.asarray(meta.palette, dtype=np.uint8), class_names=tuple(meta.class_names),
                            view=cfg.view, alpha=cfg.alpha, legend=cfg.legend, colormap=cfg.colormap,
                            depth_range=cfg.depth_range, hud=cfg.hud)
    except ValueError as e:
        raise UserError(str(e)) from None
    smooth = SmoothedDepthRange(cfg.depth_smoothing) if cfg.depth_range is None and cfg.depth_smoothing < 1 else None
    if device is not None:
        from .render_torch import TorchRenderer

        gpu = TorchRenderer(style, device)

        def render_on_device(p: Any, hud: list[str]) -> np.ndarray:
            rng = None
            if smooth is not None and p.depth is not None:
                rng = smooth.update(*gpu.frame_ranges(p.depth, p.classes)[0])
            return gpu.render(p.image, p.classes, p.depth, hud_lines=hud, depth_range=rng)
        return render_on_device

    def render_on_host(p: Any, hud: list[str]) -> np.ndarray:
        rng = None
        if smooth is not None and p.depth is not None:
            rng = smooth.update(*frame_depth_range(p.depth, p.classes, style))
        return render_frame(p.frame.image, p.classes, p.depth, style, hud_lines=hud, depth_range=rng)
    return render_on_host


Interrupts = Callable[[Pipeline], contextlib.AbstractContextManager]


def execute(cfg: RunConfig, interrupts: Interrupts | None = None,
            network: tuple[Network, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run the whole pipeline; returns (exit code, the statistics report). ``interrupts(pipeline)``: a context held
    while the stages run (the command's signal handling; none by default). ``network``: (network, weights path)
    from :func:`load_network` for ``cfg``, reused (a fleet worker runs many videos with one compiled network).
    Errors of the setup (bad weights, source, outputs) raise a one-line UserError; errors while running end up in
    the report and the code."""
    from .sources import open_source
    from .sources.skip import Skipped

    device = resolve_device(cfg.device)
    network, weights_path = network if network is not None else load_network(cfg, device)
    meta = network.meta
    if cfg.view == "depth" and meta.depth is None:
        raise UserError("--view depth needs a checkpoint with a depth head; this one is segmentation only")
    box = tuple(cfg.input_size or meta.input_size)
    max_frames = cfg.max_frames
    if any(output_kind(o) == "picture" for o in cfg.outputs):
        max_frames = 1  # a picture holds one frame: the first one run (--start-frame/--frame pick which)
    device_stages = (device.type == "cuda") if cfg.device_stages is None else cfg.device_stages
    attention = None
    if cfg.view == "attention":  # maps from hooks on the chosen blocks only, drawn on the host
        from .attention_view import for_run

        attention = for_run(cfg, meta, box)
        device_stages = False
    engine = InferenceEngine(network, cuda_graphs=cfg.cuda_graphs, keep_on_device=device_stages,
                             attention=attention.request if attention else None)
    stats = PipelineStats()
    with ExitStack() as stack:
        hw = device.type == "cuda" if cfg.hw_decode is None else cfg.hw_decode
        # CPU inference already uses every core: a single decoder thread costs the least CPU per frame
        threads = 1 if device.type == "cpu" else 0
        gpu = cuda_index(device)  # NVDEC and NVENC on the run's GPU, not GPU 0
        source = stack.enter_context(open_source(cfg.source, live=cfg.live, timeout_s=cfg.timeout_s,
                                                 reconnect=cfg.reconnect, hwaccel=hw, decode_threads=threads,
                                                 hw_device=gpu))
        if cfg.start_frame:
            source = Skipped(source, cfg.start_frame)
        source.on_damage = stats.damaged  # undecodable packets skipped: counted in the report
        known = (source.height, source.width) if source.height and source.width else None
        if attention and cfg.attention_query is not None and known:  # before any output exists
            from .attention_fit import check_query

            check_query(cfg.attention_query, known)
        batch = 1 if source.live else cfg.batch_size
        network_input = model_input_size(known, box) if known else None
        sinks, main_thread, out_names, encoders = open_sinks(
            cfg, source, stack, cuda=device.type == "cuda", gpu=gpu,
            on_click=attention.renderer.click if attention else None)
        if network_input is not None:  # compile for the real shape now, not on the first batch of a live run
            t0 = time.perf_counter()
            network.prepare((batch, 3, *network_input))
            network.startup_s += time.perf_counter() - t0
        plan = RunPlan(device=str(network.device), backend=network.name, precision=network.precision,
                       precision_note=network.note, input_box=box, network_input=network_input, batch_size=batch,
                       live=source.live, device_stages=device_stages, cuda_graphs=engine.cuda_graphs,
                       fold_heads=cfg.fold_heads, decoder=source.decoder, encoders=tuple(encoders),
                       start_frame=cfg.start_frame, max_frames=max_frames)
        log.info(network.describe())  # said once source and outputs opened: a bad input stays one line
        log.info(plan.line())
        render = attention.render if attention else make_renderer(cfg, meta, device if device_stages else None)
        parts = PipelineParts(
            source=source, preprocess=Preprocessor(box, resize_on_device=device_stages),
            engine=engine, render=render, sinks=sinks, live=plan.live,
            batch_size=plan.batch_size, queue_size=cfg.queue_size, max_frames=plan.max_frames,
            hud=cfg.hud, main_thread_sinks=main_thread,
        )
        pipeline = Pipeline(parts, stats)
        total = source.frame_count
        if plan.max_frames is not None:
            total = min(total, plan.max_frames) if total else plan.max_frames
        dash = Dashboard(stats, cfg.progress, total, source.fps, source.description)
        close_error: UserError | None = None
        with (interrupts or _no_interrupts)(pipeline):
            with dash:
                pipeline.start()
                while pipeline.alive():
                    pipeline.pump()
                    dash.update()
                    time.sleep(0.01 if main_thread else 0.05)
                pipeline.join()
            # sinks finalise here (ExitStack), before anything is reported as written, with the signal handlers
            # still held: a Ctrl-C during the encoder flush cannot cut a file short
            try:
                stack.close()
            except UserError as e:
                close_error = e

    snap = stats.snapshot(source.fps if not plan.live else None)
    snap["frames"]["abandoned"] = pipeline.abandoned  # read but never written (a second Ctrl-C, a failed stage)
    error = _error_line(pipeline, close_error, plan)
    if error is None and cfg.start_frame and isinstance(source, Skipped) and source.seen <= cfg.start_frame:
        error = (f"--start-frame {cfg.start_frame}: the source has only {source.seen} frame(s)", 2)
    report = _report(cfg, plan, snap, source, weights_path, network, out_names, pipeline, error)
    if error:
        return error[1], report
    return (130 if pipeline.interrupted else 0), report


def _no_interrupts(pipeline: Pipeline) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _error_line(pipeline: Pipeline, close_error: UserError | None, plan: RunPlan) -> tuple[str, int] | None:
    for e in pipeline.errors:
        if isinstance(e.error, UserError):
            return str(e.error), e.error.exit_code
        if is_out_of_memory(e.error):  # a request sized by the user: name the settings that size it
            size = "x".join(map(str, plan.network_input or plan.input_box))
            return (f"not enough memory on {plan.device} for a batch of {plan.batch_size} at {size} in the "
                    f"{e.stage} stage; lower --batch-size or --input-size", 2)
        return f"{e.stage} stage failed: {type(e.error).__name__}: {e.error}", 1
    if close_error is not None:
        return str(close_error), close_error.exit_code
    if pipeline.source_error is not None:
        return str(pipeline.source_error), 2
    return None


def _report(cfg: RunConfig, plan: RunPlan, snap: dict, source: Any, weights: str, network: Network,
            outputs: list[str], pipeline: Pipeline, error: tuple[str, int] | None) -> dict[str, Any]:
    sizes = sorted({str(s) for s in pipeline.p.preprocess.sizes_seen})
    return {
        "version": __version__,
        "source": {"spec": cfg.source, "description": source.description, "fps": source.fps,
                   "decoder": source.decoder, "frame_count": source.frame_count, "live": plan.live},
        "model": {"weights": weights, "variant": network.meta.variant, "input_box": list(plan.input_box),
                  "input_sizes": sizes, "device": plan.device, "precision": plan.precision,
                  "backend": plan.backend, "startup_s": network.startup_s,
                  "batch_size": plan.batch_size, "folded_heads": plan.fold_heads,
                  "cuda_graphs": plan.cuda_graphs, "device_stages": plan.device_stages},
        "plan": plan.as_dict(),
        "outputs": outputs,
        **snap,
        "interrupted": pipeline.interrupted,
        "error": error[0] if error else None,
        "config": as_dict(cfg),
    }
