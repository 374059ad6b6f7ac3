"""One typed object holds every setting of `run`; presets in pipelines/*.toml, flags override them."""
from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runtime.backends import BACKENDS
from ..runtime.bundled import preset_names, preset_path
from ..runtime.device import PRECISION_CHOICES
from ..runtime.progress import PROGRESS_MODES
from ..runtime.settings import check_config, check_settings, quoted, setting
from ..runtime.sizes import MAX_SIDE
from .attention_view import BESIDE
from .render import ATTENTION_VIEW, COLORMAPS, RUN_VIEWS

# bounds of user-sized requests: a typo costs one line, not an allocation failure (a 720p batch of 64 is 177 MB
# of frames before the network's own memory)
MAX_BATCH = 64
MAX_QUEUE = 256

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "as_dict", "build_config", "load_preset"]


G_PROC, G_VIEW, G_ATTN, G_OUT, G_STATS = "processing", "rendering", "attention view (--view attention)", \
    "video output", "statistics"


@dataclass
class RunConfig:
    """Every setting of `run`: defaults here, presets (pipelines/*.toml, the same names) over them, flags over
    those. The command line's flags are made from these fields (cli.py)."""

    source: str = setting("", positional=True, help="video file, camera index or /dev/videoN, rtsp/rtmp/http(s) "
                          "URL, image or folder of images, or synthetic:[seed=N,size=HxW,fps=F,frames=N]")
    outputs: list[str] = setting([], flag="--output", short="-o", repeat=True, metavar="PATH",
                                 help="write an annotated .mp4 (or .mkv/.mov), a .png/.jpg picture (one frame), a "
                                      ".gif, or images into a directory; repeatable")
    show: bool = setting(False, help="open a live window (q or Esc quits)")
    weights: str | None = setting(None, help="checkpoint", default_text="the bundled B0 weights")
    live: bool | None = setting(None, group=G_PROC, default_text="on for cameras/URLs, off for files",
                                help="newest frame wins, drops counted")
    device: str = setting("auto", group=G_PROC, help="auto | cpu | cuda | cuda:N")
    precision: str = setting("auto", group=G_PROC, choices=PRECISION_CHOICES,
                             help="auto: fp16 autocast on CUDA; on the CPU bf16 where OpenVINO has it and it keeps "
                                  "the outputs, else fp32")
    backend: str = setting("auto", group=G_PROC, choices=BACKENDS,
                           help="auto: OpenVINO on the CPU, torch on CUDA, TensorRT for an .engine")
    input_size: tuple[int, int] | None = setting(None, size=MAX_SIDE, metavar="HxW", group=G_PROC,
                                                 default_text="the checkpoint's",
                                                 help="model input box; the frame is fitted keeping its aspect "
                                                      "ratio, sides rounded to multiples of 32")
    batch_size: int = setting(4, low=1, high=MAX_BATCH, group=G_PROC,
                              help="frames per batch for files (live sources use 1)")
    queue_size: int = setting(8, low=1, high=MAX_QUEUE, group=G_PROC,
                              help="frames buffered between stages (files; live sources keep only the newest)")
    max_frames: int | None = setting(None, low=1, metavar="N", group=G_PROC, help="stop after N frames")
    start_frame: int = setting(0, low=0, metavar="N", group=G_PROC,
                               help="skip the source's first N frames (decoded, not run)")
    timeout_s: float = setting(10.0, low=0.0, low_open=True, flag="--timeout", metavar="S", group=G_PROC,
                               help="open/read timeout of cameras and network streams")
    reconnect: bool = setting(True, cli=False, help="reopen a camera or stream that fails")
    fold_heads: bool = setting(True, group=G_PROC,
                               help="fold the linear decoder steps for inference (exact, faster)")
    device_stages: bool | None = setting(None, group=G_PROC, default_text="on for CUDA",
                                         help="resize and render on the inference device, download only the "
                                              "final frame")
    cuda_graphs: bool | None = setting(None, group=G_PROC, default_text="on for CUDA",
                                       help="replay inference as a CUDA graph per input shape")
    view: str = setting("overlay", choices=RUN_VIEWS, group=G_VIEW, help="what is drawn")
    alpha: float = setting(0.5, low=0.0, high=1.0, group=G_VIEW, help="class colour weight in the overlay")
    legend: bool = setting(True, group=G_VIEW, help="class legend")
    hud: bool = setting(True, group=G_VIEW, help="FPS/latency overlay")
    colormap: str = setting("turbo", choices=COLORMAPS, group=G_VIEW, help="depth colour map (near is warm)")
    depth_range: tuple[float, float] | None = setting(None, low=0.0, metavar=("NEAR", "FAR"), group=G_VIEW,
                                                      default_text="a robust range smoothed over frames",
                                                      help="fixed depth colour range")
    depth_smoothing: float = setting(0.05, low=0.0, low_open=True, high=1.0, metavar="W", group=G_VIEW,
                                     help="share of each new frame in the smoothed depth colour range (1 = per "
                                          "frame)")
    # --view attention (numbers from 1): one stage (None: the four in a 2x2 grid), its block (None: the last),
    # a head or "mean", the query in source pixels (None: the attention each location receives; a click moves it),
    # head outputs drawn beside the maps ("overlay", "depth")
    attention_stage: int | None = setting(None, flag="--stage", metavar="1-4", group=G_ATTN,
                                          default_text="all four in a 2x2 grid", help="one encoder stage")
    attention_block: int | None = setting(None, flag="--block", metavar="N", group=G_ATTN, default_text="its last",
                                          help="block of the stage, from 1")
    attention_head: int | str = setting("mean", flag="--head", metavar="N|mean", group=G_ATTN,
                                        help="attention head, from 1, or mean")
    attention_query: tuple[int, int] | None = setting(None, flag="--query", metavar="X,Y", group=G_ATTN,
                                                      default_text="the attention each location receives, the mean "
                                                                   "over queries; in the window a click moves it",
                                                      help="query pixel of the source: its attention over the image")
    attention_with: tuple[str, ...] = setting((), flag="--with", metavar="overlay|depth", repeat=True, commas=True,
                                              choices=BESIDE, group=G_ATTN,
                                              help="draw a head's output beside the maps (repeatable, or "
                                                   "overlay,depth)")
    attention_colormap: str = setting("inferno", choices=COLORMAPS, cli=False, help="colour map of the maps")
    attention_alpha: float = setting(0.6, low=0.0, high=1.0, cli=False, help="weight of the maps over the frame")
    codec: str = setting("auto", group=G_OUT, help="video encoder: auto (h264_nvenc on CUDA runs when it opens, else "
                                                   "libx264) or any FFmpeg encoder name")
    hw_decode: bool | None = setting(None, group=G_OUT, default_text="tried on CUDA runs, software fallback",
                                     help="NVIDIA decoding of video files")
    crf: int | None = setting(23, group=G_OUT, help="constant rate factor for x264/x265")
    preset: str | None = setting(None, group=G_OUT, default_text="medium for files, veryfast/superfast in real time",
                                 help="encoder preset")
    realtime: bool | None = setting(None, group=G_OUT, default_text="on for cameras and streams, off for files",
                                    help="favour keeping up with the source over file size: a fast encoder preset, "
                                         "crf kept (files still keep every frame)")
    bitrate: str | None = setting(None, group=G_OUT, help="target bitrate, e.g. 8M (codecs without CRF)")
    audio: bool = setting(True, group=G_OUT, help="copy the source's audio into the video (--no-audio drops it)")
    overwrite: bool = setting(False, group=G_OUT, help="replace outputs that already exist (an input is never written)")
    stats_json: str | None = setting(None, metavar="PATH", group=G_STATS,
                                     help="write all statistics as JSON (schema in README)")
    progress: str = setting("auto", choices=PROGRESS_MODES, group=G_STATS,
                            help="live terminal view (auto: rich on a terminal, plain lines otherwise)")
    # the preset file the settings came from (set by build_config; an input, never written)
    pipeline: str | None = setting(None, metavar="PRESET", help="TOML preset: a file or a name in pipelines/ "
                                   "(webcam, dashcam-file, benchmark); flags override it")

    def validate(self, where: Callable[[str], str] = quoted) -> "RunConfig":
        """Types, bounds and choices (from the fields above, also for a RunConfig built in Python), then what
        relates settings to each other. ``where`` names a setting in errors (the CLI passes its flag names)."""
        check_config(self, where)
        if not self.source:
            raise UserError("no source given (a video file, camera index, URL, image folder or synthetic:)")
        if not _DEVICE_RE.fullmatch(self.device):
            raise UserError(f"unknown device '{self.device}'; choose auto, cpu, cuda or cuda:N (N a GPU number)")
        if self.depth_range is not None and not self.depth_range[0] < self.depth_range[1]:
            raise UserError(f"{where('depth_range')} needs NEAR < FAR, got {self.depth_range[0]} {self.depth_range[1]}")
        self._validate_attention(where)
        return self

    def _validate_attention(self, where: Callable[[str], str]) -> None:
        from ..model.attention import check_request, parse_head

        if isinstance(self.attention_head, str):
            self.attention_head = parse_head(self.attention_head)
        given = [where(k) for k in ("attention_stage", "attention_block", "attention_query")
                 if getattr(self, k) is not None] + ([where("attention_head")] if self.attention_head != "mean" else []) \
            + ([where("attention_with")] if self.attention_with else [])
        if given and self.view != ATTENTION_VIEW:
            raise UserError(f"{', '.join(given)} need {where('view')} attention")
        if self.view == ATTENTION_VIEW and self.backend not in ("auto", "torch"):
            raise UserError(f"{where('view')} attention needs the torch backend (the maps come from hooks on its "
                            f"layers), not {where('backend')} {self.backend}")
        check_request(self.attention_stage, self.attention_block, self.attention_head)
        if self.attention_query is not None and min(self.attention_query) < 0:
            raise UserError(f"{where('attention_query')} {self.attention_query[0]},{self.attention_query[1]}: pixel "
                            "positions start at 0")


_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def preset_file(path: str | Path) -> Path:
    """The file a --pipeline value names: a .toml path, or a bundled preset name such as 'webcam'."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = preset_path(str(path)) or p
    if not p.is_file():
        names = ", ".join(preset_names()) or "none installed"
        raise UserError(f"pipeline preset '{path}' not found; the bundled presets are: {names} "
                        "(or give a .toml file)")
    return p


def load_preset(path: str | Path) -> dict[str, Any]:
    """A pipelines/*.toml file (or a preset name such as 'webcam') as a dict of RunConfig fields."""
    p = preset_file(path)
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read pipeline preset '{p}': {e}") from None
    except OSError as e:
        raise UserError(f"cannot read pipeline preset '{p}': {e.strerror or e}") from None
    known = {f.name for f in fields(RunConfig)} - {"pipeline"}  # a preset does not name another
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)} in '{p}'")
    return check_settings(RunConfig, data, _in_file(p))


def _in_file(p: Path) -> Callable[[str], str]:
    return lambda key: f"'{key}' in '{p}'"


def build_config(preset: str | None, overrides: dict[str, Any],
                 where: Callable[[str], str] = quoted) -> RunConfig:
    """Defaults <- preset file <- the settings the user actually gave (None means 'not given'); ``where`` names a
    given setting in errors (the CLI: its flag)."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset), pipeline=str(preset_file(preset)))
    values.update(check_settings(RunConfig, {k: v for k, v in overrides.items() if v is not None}, where))
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise UserError(f"bad settings: {e}") from None
    return cfg.validate(where)


def shared_run_config(values: dict[str, Any], allowed: tuple[str, ...], command: str,
                      where: Callable[[str], str] = quoted) -> RunConfig:
    """The RunConfig that every stream or video of ``command`` (serve, fleet) shares: ``values`` may set only the
    settings ``allowed``; checked as `run` checks them, every cross-setting rule included (its source comes later,
    per stream or video)."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UserError(f"setting(s) {', '.join(map(where, unknown))} cannot be set for `{command}`")
    cfg = RunConfig(**check_settings(RunConfig, dict(values), where))
    dataclasses.replace(cfg, source="synthetic:").validate(where)
    return cfg


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
