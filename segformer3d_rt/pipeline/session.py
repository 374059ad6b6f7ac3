"""One run of the pipeline: build the stages from a RunConfig, run them, return (exit code, report).

The report (``execute``'s second value; what ``run --stats-json`` writes) holds ``version``, ``source`` (spec,
description, fps, decoder, frame_count, live), ``model`` (weights, variant, input_box, input_sizes, device,
precision, batch_size, folded_heads, cuda_graphs, device_stages), ``outputs``, the statistics snapshot
(:meth:`PipelineStats.snapshot`: frames, throughput, latencies, ...), ``interrupted``, ``error`` and ``config``.
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
from ..model import SegFormer3D
from ..runtime.backends import Backend, open_network
from ..runtime.bundled import default_weights
from ..runtime.media_kinds import VIDEO_SUFFIXES
from ..runtime.sizes import model_input_size
from ..runtime.device import cuda_index, precision_name, resolve_device, resolve_precision
from .config import RunConfig, as_dict
from .dashboard import Dashboard
from .infer import InferenceEngine
from .preprocess import Preprocessor
from .runner import Pipeline, PipelineParts
from .stats import PipelineStats

log = logging.getLogger(__name__)


def load_network(cfg: RunConfig, device: torch.device | None = None) -> tuple[SegFormer3D | Backend, str]:
    """The torch model, or the exported-network backend that --backend picks (runtime/backends)."""
    path = Path(cfg.weights) if cfg.weights else default_weights()
    backend = "torch" if cfg.view == "attention" and cfg.backend == "auto" else cfg.backend  # hooks need torch
    device = device if device is not None else resolve_device(cfg.device)
    return open_network(path, backend, device, cfg.precision, cfg.input_size), str(path)


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


def _prepare_backend(model: Backend, source: Any, box: tuple[int, int], batch: int) -> None:
    """Compile for the source's real input shape now: a compile on the first batch costs a second of a run that
    is meant to keep up with its source (the backend pads a file's short last batch into the same shape)."""
    h, w = getattr(source, "height", 0) or 0, getattr(source, "width", 0) or 0
    if h and w and hasattr(model, "prepare"):
        t0 = time.perf_counter()
        model.prepare((batch, 3, *model_input_size((h, w), box)))
        model.startup_s += time.perf_counter() - t0


def _open_sinks(cfg: RunConfig, source: Any, stack: ExitStack, cuda: bool = False,
                gpu: int | None = None, on_click: Callable | None = None) -> tuple[list[Any], list[Any], list[str]]:
    """``gpu``: the run's CUDA device index, where NVENC encodes (None: not a CUDA run). ``on_click``: the window's
    mouse clicks (canvas pixels; the attention view moves its query)."""
    from .sinks import DisplaySink, ImageDirSink, Mp4Sink, choose_encoder
    from .sinks.encoders import choose_preset

    sinks: list[Any] = []
    main_thread: list[Any] = []
    names: list[str] = []
    for out in cfg.outputs:
        p = Path(out)
        encoder_line = None
        if p.suffix.lower() in VIDEO_SUFFIXES:
            time_base = getattr(source, "time_base", None)
            audio = getattr(source, "path", None) if cfg.audio else None
            if audio is not None and not getattr(source, "reopenable", True):
                if getattr(source, "has_audio", True):
                    log.warning("audio of '%s' not written: a FIFO can be read only once (the video is)", audio)
                audio = None
            codec, note = choose_encoder(cfg.codec, prefer_hardware=cuda, gpu=gpu)
            size = (getattr(source, "width", 0) or 0, getattr(source, "height", 0) or 0)
            realtime = getattr(source, "live", False) if cfg.realtime is None else cfg.realtime
            preset, why = choose_preset(cfg.preset, realtime)
            sink = Mp4Sink(p, fps=source.fps or 25.0, time_base=time_base, audio_from=audio, codec=codec,
                           crf=cfg.crf, preset=preset, bitrate=cfg.bitrate, gpu=gpu, size=size)
            encoder_line = f"encode {p.name}: {note}; {sink.quality}" + (f" ({why})" if cfg.preset is None else "")
        elif p.suffix:
            raise UserError(f"output '{out}': unknown kind (use a .mp4/.mkv/.mov file or a directory)")
        else:
            sink = ImageDirSink(p, inputs=getattr(source, "files", ()))  # names planned from an image source
        sinks.append(stack.enter_context(sink))
        names.append(str(p))
        if encoder_line:  # said once the file really opened, so a bad output path gives exactly one line
            log.info(encoder_line)
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
    return sinks, main_thread, names


def _renderer(cfg: RunConfig, meta: Any, device: torch.device | None) -> Any:
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


def execute(cfg: RunConfig, interrupts: Interrupts | None = None) -> tuple[int, dict[str, Any]]:
    """Run the whole pipeline; returns (exit code, the statistics report). ``interrupts(pipeline)``: a context held
    while the stages run (the command's signal handling; none by default). Errors of the setup (bad weights,
    source, outputs) raise a one-line UserError; errors while running end up in the report and the code."""
    from .sources import open_source

    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    model, weights_path = load_network(cfg, device)
    if cfg.view == "depth" and model.meta.depth is None:
        raise UserError("--view depth needs a checkpoint with a depth head; this one is segmentation only")
    box = cfg.input_size or tuple(model.meta.input_size)
    on_device = (device.type == "cuda") if cfg.device_stages is None else cfg.device_stages
    attention = None
    if cfg.view == "attention":  # maps from hooks on the chosen blocks only, drawn on the host
        from .attention_view import for_run

        attention = for_run(cfg, model.meta, box)
        on_device = False
    engine = InferenceEngine(model, device, dtype, fold_heads=cfg.fold_heads, cuda_graphs=cfg.cuda_graphs,
                             keep_on_device=on_device, attention=attention.request if attention else None)
    stats = PipelineStats()
    with ExitStack() as stack:
        hw = device.type == "cuda" if cfg.hw_decode is None else cfg.hw_decode
        # CPU inference already uses every core: a single decoder thread costs the least CPU per frame
        threads = 1 if device.type == "cpu" else 0
        gpu = cuda_index(device)  # NVDEC and NVENC on the run's GPU, not GPU 0
        source = stack.enter_context(open_source(cfg.source, live=cfg.live, timeout_s=cfg.timeout_s,
                                                 reconnect=cfg.reconnect, hwaccel=hw, decode_threads=threads,
                                                 hw_device=gpu))
        source.on_damage = stats.damaged  # undecodable packets skipped: counted in the report
        sinks, main_thread, out_names = _open_sinks(cfg, source, stack, cuda=device.type == "cuda", gpu=gpu,
                                                    on_click=attention.renderer.click if attention else None)
        if isinstance(model, Backend):  # said once source and outputs opened: a bad input stays one line
            _prepare_backend(model, source, box, 1 if source.live else cfg.batch_size)
            log.info(model.describe())
        live = source.live
        render = attention.render if attention else _renderer(cfg, model.meta, device if on_device else None)
        parts = PipelineParts(
            source=source, preprocess=Preprocessor(box, resize_on_device=on_device),
            engine=engine, render=render, sinks=sinks, live=live,
            batch_size=1 if live else cfg.batch_size, queue_size=cfg.queue_size, max_frames=cfg.max_frames,
            hud=cfg.hud, main_thread_sinks=main_thread,
        )
        pipeline = Pipeline(parts, stats)
        total = source.frame_count
        if cfg.max_frames is not None:
            total = min(total, cfg.max_frames) if total else cfg.max_frames
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

    snap = stats.snapshot(source.fps if not live else None)
    snap["frames"]["abandoned"] = pipeline.abandoned  # read but never written (a second Ctrl-C, a failed stage)
    error = _error_line(pipeline, close_error)
    report = _report(cfg, snap, source, weights_path, model, device, dtype, box, out_names, live, pipeline, error)
    if error:
        return error[1], report
    return (130 if pipeline.interrupted else 0), report


def _no_interrupts(pipeline: Pipeline) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def _error_line(pipeline: Pipeline, close_error: UserError | None) -> tuple[str, int] | None:
    for e in pipeline.errors:
        if isinstance(e.error, UserError):
            return str(e.error), e.error.exit_code
        return f"{e.stage} stage failed: {type(e.error).__name__}: {e.error}", 1
    if close_error is not None:
        return str(close_error), close_error.exit_code
    if pipeline.source_error is not None:
        return str(pipeline.source_error), 2
    return None


def _report(cfg: RunConfig, snap: dict, source: Any, weights: str, model: SegFormer3D, device: torch.device,
            dtype: torch.dtype | None, box: tuple[int, int], outputs: list[str], live: bool, pipeline: Pipeline,
            error: tuple[str, int] | None) -> dict[str, Any]:
    sizes = sorted({str(s) for s in pipeline.p.preprocess.sizes_seen})
    return {
        "version": __version__,
        "source": {"spec": cfg.source, "description": source.description, "fps": source.fps,
                   "decoder": getattr(source, "decoder", None),
                   "frame_count": source.frame_count, "live": live},
        "model": {"weights": weights, "variant": model.meta.variant, "input_box": list(box),
                  "input_sizes": sizes, "device": str(device),
                  "precision": model.precision if isinstance(model, Backend) else precision_name(dtype),
                  "backend": model.name if isinstance(model, Backend) else "torch",
                  "startup_s": model.startup_s if isinstance(model, Backend) else None,
                  "batch_size": pipeline.p.batch_size, "folded_heads": cfg.fold_heads,
                  "cuda_graphs": pipeline.p.engine.cuda_graphs, "device_stages": pipeline.p.engine.keep_on_device},
        "outputs": outputs,
        **snap,
        "interrupted": pipeline.interrupted,
        "error": error[0] if error else None,
        "config": as_dict(cfg),
    }
