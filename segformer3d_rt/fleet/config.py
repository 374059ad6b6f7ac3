"""The typed settings of `fleet`: FleetConfig, holding the RunConfig every video shares (`run`'s flags of the same
names: view, codec, input size, backend, ...)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UserError
from ..pipeline.config import RunConfig, shared_run_config
from ..runtime.progress import PROGRESS_MODES
from ..runtime.settings import Spec, quoted, setting

__all__ = ["RUN_SETTINGS", "FleetConfig", "fleet_run_template"]

# `run`'s settings that a fleet applies to every video
RUN_SETTINGS = ("weights", "device", "precision", "backend", "input_size", "batch_size", "view", "alpha", "legend",
                "hud", "colormap", "depth_range", "depth_smoothing", "codec", "crf", "preset", "bitrate", "audio",
                "fold_heads", "max_frames")
MAX_WORKERS = 256


@dataclass
class FleetConfig:
    """Every setting of `fleet`."""

    inputs: list[str] = setting([], positional=True, metavar="INPUT",
                                help="video files, folders, globs, or a manifest (.txt: one path a line; .csv: a "
                                     "'path' column or the first)")
    out_dir: str = setting("", flag="--output", short="-o", metavar="OUTDIR", required=True,
                           help="folder of the annotated videos, the fleet manifest and the summary")
    address: str | None = setting(None, default_text="a local Ray cluster for this run",
                                  help="local (this process, no Ray) | auto (join the running cluster) | "
                                       "ray://HOST:PORT")
    workers: int | None = setting(None, low=1, high=MAX_WORKERS, default_text="what the cluster's CPUs (or GPUs) "
                                  "allow", help="workers, each with its own compiled network")
    cpus_per_worker: float = setting(1.0, low=0.0, low_open=True, high=1024.0, metavar="C",
                                     help="CPUs a worker reserves (and its inference threads)")
    gpus_per_worker: float = setting(0.0, low=0.0, high=64.0, metavar="G", help="GPUs a worker reserves")
    retries: int = setting(2, low=0, high=100, help="further attempts at a video whose worker died")
    progress: str = setting("auto", choices=PROGRESS_MODES,
                            help="one bar over videos and frames (auto: rich on a terminal, plain lines otherwise)")
    run: RunConfig = dataclasses.field(default_factory=RunConfig,
                                       metadata={"setting": Spec(cli=False, help="the settings every video shares")})

    def check(self, where: Callable[[str], str] = quoted) -> "FleetConfig":
        if not self.inputs:
            raise UserError("no inputs given (video files, folders, globs or a manifest)")
        if not self.out_dir:
            raise UserError(f"{where('out_dir')} OUTDIR is needed")
        if self.address not in (None, "local", "auto") and not str(self.address).startswith("ray://"):
            raise UserError(f"{where('address')} '{self.address}': give local, auto or ray://HOST:PORT")
        return self

    def video_run(self, source: str, output: str) -> RunConfig:
        """The RunConfig of one video: the template with its source and output (which the manifest owns)."""
        return replace(self.run, source=source, outputs=[output], overwrite=True, progress="none", stats_json=None,
                       show=False, live=False).validate()


def fleet_run_template(values: Mapping[str, Any], where: Callable[[str], str] = quoted) -> RunConfig:
    """The shared RunConfig from ``values`` (a subset of RUN_SETTINGS), checked as `run` checks them."""
    return shared_run_config(dict(values), RUN_SETTINGS, "fleet", where)
