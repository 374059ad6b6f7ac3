"""One typed object holds every setting of `run`; presets in pipelines/*.toml, flags override them."""
from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runtime.bundled import preset_names, preset_path
from ..runtime.settings import check_settings
from ..runtime.sizes import MAX_SIDE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "as_dict", "build_config", "load_preset"]


@dataclass
class RunConfig:
    source: str = ""
    weights: str | None = None  # None: the bundled default
    outputs: list[str] = field(default_factory=list)  # .mp4 files and/or image directories
    show: bool = False
    live: bool | None = None  # None: chosen by the source type (cameras/URLs live, files lossless)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    # auto | torch | openvino | onnxruntime | tensorrt (auto: OpenVINO on CPU, torch on CUDA, TensorRT for an
    # .engine; see runtime/backends)
    backend: str = "auto"
    # H x W box; None: the checkpoint's recommendation ("HxW" text or [H, W] in presets; sides bounded)
    input_size: tuple[int, int] | None = field(default=None, metadata={"size": MAX_SIDE})
    batch_size: int = 4  # for files; live sources always use 1
    queue_size: int = 8  # per stage, files (live sources keep only the newest frame)
    view: str = "overlay"
    alpha: float = 0.5
    legend: bool = True
    hud: bool = True
    colormap: str = "turbo"
    depth_range: tuple[float, float] | None = None  # fixed colour range; None: smoothed over frames
    depth_smoothing: float = 0.05  # share of each frame in the smoothed depth range; 1 = per-frame range
    codec: str = "auto"  # auto: h264_nvenc on a CUDA run when it opens, else libx264; or any FFmpeg encoder
    hw_decode: bool | None = None  # NVIDIA decoding of video files (None: try it on CUDA runs)
    crf: int | None = 23
    preset: str | None = None  # None: medium for a file, a fast one in real time (sinks/encoders.choose_preset)
    realtime: bool | None = None  # keep up with the source (fast encoder preset); None: on for live sources
    bitrate: str | None = None
    audio: bool = True
    max_frames: int | None = None
    stats_json: str | None = None
    progress: str = "auto"  # auto | rich | plain | none
    timeout_s: float = 10.0  # open/read timeout of cameras and network streams
    reconnect: bool = True
    fold_heads: bool = True  # inference-time folding of the linear decoder steps (exact)
    device_stages: bool | None = None  # resize + render on the inference device (None: on for CUDA)
    cuda_graphs: bool | None = None  # capture inference as a CUDA graph per input shape (None: on for CUDA)
    pipeline: str | None = None  # the preset file the settings came from (set by build_config; an input, never written)
    # --view attention (numbers from 1): one stage (None: the four in a 2x2 grid), its block (None: the last),
    # a head or "mean", the query in source pixels (None: the attention each location receives; a click moves it),
    # head outputs drawn beside the maps ("overlay", "depth")
    attention_stage: int | None = None
    attention_block: int | None = None
    attention_head: int | str = "mean"
    attention_query: tuple[int, int] | None = None
    attention_with: tuple[str, ...] = ()

    def validate(self) -> "RunConfig":
        """Types (from the annotations above, also for a RunConfig built in Python), then values."""
        from .render import COLORMAPS, RUN_VIEWS as VIEWS  # numpy and cv2: only once a config is really checked

        typed = check_settings(RunConfig, {f.name: getattr(self, f.name) for f in fields(self)}, lambda k: f"'{k}'")
        for name, value in typed.items():
            setattr(self, name, value)
        if not self.source:
            raise UserError("no source given (a video file, camera index, URL, image folder or synthetic:)")
        if self.view not in VIEWS:
            raise UserError(f"unknown view '{self.view}'; choose one of {', '.join(VIEWS)}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise UserError(f"unknown precision '{self.precision}'; choose auto, fp32, fp16 or bf16")
        from ..runtime.backends import BACKENDS

        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend '{self.backend}'; choose one of {', '.join(BACKENDS)}")
        if not _DEVICE_RE.fullmatch(self.device):
            raise UserError(f"unknown device '{self.device}'; choose auto, cpu, cuda or cuda:N (N a GPU number)")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"--alpha must be between 0 and 1, not {self.alpha}")
        if self.batch_size < 1 or self.queue_size < 1:
            raise UserError("--batch-size and --queue-size must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError("--max-frames must be at least 1")
        if self.colormap not in COLORMAPS:
            raise UserError(f"unknown colour map '{self.colormap}'; choose one of {', '.join(COLORMAPS)}")
        if self.depth_range is not None and not self.depth_range[0] < self.depth_range[1]:
            raise UserError(f"--depth-range needs NEAR < FAR, got {self.depth_range[0]} {self.depth_range[1]}")
        if not 0.0 < self.depth_smoothing <= 1.0:
            raise UserError(f"--depth-smoothing must be in (0, 1], not {self.depth_smoothing}")
        if self.progress not in ("auto", "rich", "plain", "none"):
            raise UserError(f"unknown progress mode '{self.progress}'")
        if not self.timeout_s > 0:
            raise UserError(f"--timeout must be more than 0 seconds, not {self.timeout_s}")
        self._validate_attention()
        return self

    def _validate_attention(self) -> None:
        from ..model.attention import check_request, parse_head
        from .attention_view import BESIDE

        if isinstance(self.attention_head, str):
            self.attention_head = parse_head(self.attention_head)
        given = [flag_name(k) for k in ("attention_stage", "attention_block", "attention_query")
                 if getattr(self, k) is not None] + (["--head"] if self.attention_head != "mean" else []) \
            + (["--with"] if self.attention_with else [])
        if given and self.view != "attention":
            raise UserError(f"{', '.join(given)} need --view attention")
        if self.view == "attention" and getattr(self, "backend", "auto") not in ("auto", "torch"):
            raise UserError(f"--view attention needs the torch backend (the maps come from hooks on its layers), "
                            f"not --backend {self.backend}")
        check_request(self.attention_stage, self.attention_block, self.attention_head)
        if self.attention_query is not None and min(self.attention_query) < 0:
            raise UserError(f"--query {self.attention_query[0]},{self.attention_query[1]}: pixel positions start at 0")
        unknown = [w for w in self.attention_with if w not in BESIDE]
        if unknown:
            raise UserError(f"--with {unknown[0]}: choose {' or '.join(BESIDE)}")


_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
# flags whose name is not --<field-name-with-dashes>
_FLAGS = {"source": "SOURCE", "outputs": "--output", "timeout_s": "--timeout", "stats_json": "--stats-json",
          "attention_stage": "--stage", "attention_block": "--block", "attention_head": "--head",
          "attention_query": "--query", "attention_with": "--with"}


def flag_name(key: str) -> str:
    """The command-line flag of a RunConfig field, for error messages."""
    return _FLAGS.get(key, "--" + key.replace("_", "-"))


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


def build_config(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults <- preset file <- flags the user actually gave (None means 'not given')."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset), pipeline=str(preset_file(preset)))
    values.update(check_settings(RunConfig, {k: v for k, v in overrides.items() if v is not None}, flag_name))
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise UserError(f"bad settings: {e}") from None
    return cfg.validate()


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
