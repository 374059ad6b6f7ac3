"""`segformer3d-rt synth`: render a drive of the procedural world to a video (how samples/ is made)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SinkError, UserError
from ..pipeline.frames import Frame
from ..pipeline.media import exact_rate
from ..pipeline.sinks import Mp4Sink
from ..runtime.paths import check_new
from ..runtime.settings import check_config, setting
from ..runtime.sizes import MAX_SIDE
from ..synthetic import SyntheticWorld


@dataclass
class SynthConfig:
    """`synth`: ``frames`` consecutive frames of the drive through world ``seed``, encoded to ``output``."""

    output: str = setting(short="-o", required=True, help="output video (.mp4)")
    seed: int = setting(7, help="world seed")
    frames: int = setting(250, low=1, high=1_000_000, help="number of frames")
    size: tuple[int, int] = setting((360, 640), size=MAX_SIDE, metavar="HxW", help="frame size")
    fps: float = setting(25.0, low=0.0, low_open=True, high=1000.0, help="frames per second")
    crf: int = setting(23, low=0, high=51, help="libx264 quality")
    overwrite: bool = setting(False, help="replace outputs that already exist (an input is never written)")


def run_synth(cfg: SynthConfig) -> int:
    check_config(cfg)
    check_new([("output", cfg.output)], cfg.overwrite)
    n = write_drive(cfg.output, cfg.seed, cfg.frames, cfg.size, cfg.fps, cfg.crf)
    print(f"wrote {n} frames to {cfg.output}")
    return 0


def write_drive(path: str | Path, seed: int, frames: int, size: tuple[int, int], fps: float = 25.0,
                crf: int = 23, preset: str = "medium") -> int:
    """Encode ``frames`` consecutive frames of world ``seed`` (camera images only); returns frames written."""
    if frames < 1:
        raise UserError("--frames must be at least 1")
    h, w = size
    world = SyntheticWorld(seed=seed, height=h, width=w, fps=fps)
    tb = 1 / exact_rate(fps)
    try:
        with Mp4Sink(path, fps=fps, time_base=tb, crf=crf, preset=preset) as sink:
            for i in range(frames):
                image = world.render(i).image
                sink.write(Frame(index=i, image=image, pts=float(i * tb), t_capture=time.perf_counter(),
                                 pts_raw=i, time_base=tb), image)
            return sink.frames_written
    except SinkError as e:
        raise UserError(str(e)) from None
