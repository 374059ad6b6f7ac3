"""One typed object holds every setting of `run`; presets in pipelines/*.toml, flags override them."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runtime.bundled import preset_names, preset_path
from ..runtime.sizes import parse_size

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
    input_size: tuple[int, int] | None = None  # H x W box; None: the checkpoint's recommendation
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
    preset: str | None = "medium"
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

    def validate(self) -> "RunConfig":
        from .render import COLORMAPS, VIEWS  # numpy and cv2: only once a config is really checked

        if not self.source:
            raise UserError("no source given (a video file, camera index, URL, image folder or synthetic:)")
        if self.view not in VIEWS:
            raise UserError(f"unknown view '{self.view}'; choose one of {', '.join(VIEWS)}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise UserError(f"unknown precision '{self.precision}'; choose auto, fp32, fp16 or bf16")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UserError(f"unknown device '{self.device}'; choose auto, cpu, cuda or cuda:N")
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
        return self


def _coerce(name: str, value: Any, where: str) -> Any:
    if name == "input_size" and isinstance(value, str):
        return parse_size(value)
    if name in ("input_size", "depth_range") and isinstance(value, list):
        return tuple(value)
    if name == "outputs" and isinstance(value, str):
        return [value]
    return value


def load_preset(path: str | Path) -> dict[str, Any]:
    """A pipelines/*.toml file (or a preset name such as 'webcam') as a dict of RunConfig fields."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = preset_path(str(path)) or p
    if not p.is_file():
        names = ", ".join(preset_names()) or "none installed"
        raise UserError(f"pipeline preset '{path}' not found; the bundled presets are: {names} "
                        "(or give a .toml file)")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read pipeline preset '{p}': {e}") from None
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)} in '{p}'")
    return {k: _coerce(k, v, str(p)) for k, v in data.items()}


def build_config(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults <- preset file <- flags the user actually gave (None means 'not given')."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise UserError(f"bad settings: {e}") from None
    return cfg.validate()


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
