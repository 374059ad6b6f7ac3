"""What `run` and `attention` do: the pipeline on a source, with signal handling, the printed summary and the
stats JSON file (``run.py`` and ``attention.py`` are their entries).

Before any work, every output (videos, image folders, the stats JSON) is checked against what the user gave:
none may be an input, lie inside an input folder, or be another output. The stats JSON, when asked for, is
written on every exit path after that, with ``error`` saying why a run did not happen or did not finish.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..pipeline.config import RunConfig, as_dict, build_config
from ..pipeline.dashboard import print_summary
from ..pipeline.session import execute
from ..pipeline.stats import PipelineStats
from ..runtime.bundled import default_weights
from ..runtime.media_kinds import output_kind
from ..runtime.paths import STDOUT, check_new, check_outputs, partial_path, same_file, writable_file, write_json
from ._signals import Signals, setup_interrupts

__all__ = ["RunConfig", "build_config", "failure_report", "report_bad_settings", "run_config"]

log = logging.getLogger(__name__)


class _Reported(UserError):
    """An error raised after the summary was printed and the outputs were finalised."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def run_config(cfg: RunConfig) -> int:
    """Run the whole pipeline; returns the process exit code (errors raise a one-line UserError)."""
    inputs = _inputs(cfg)
    outputs = [(_kind(o), o) for o in cfg.outputs]
    side = {str(Path(o)): _side_files(o) for _, o in outputs if Path(o).suffix and o != STDOUT}
    if cfg.stats_json:  # the stats file first: where it is itself the problem it must not be written
        _check_stats_path(cfg.stats_json, inputs, outputs, cfg.overwrite)
    try:
        check_outputs(inputs, outputs, side)  # fail before processing, not after
        check_new(outputs, cfg.overwrite)
        with setup_interrupts():
            code, report = execute(cfg, interrupts=Signals)
    except UserError as e:
        _write_failure(cfg, str(e))
        raise
    except KeyboardInterrupt:
        _write_failure(cfg, "interrupted before processing started", interrupted=True)
        raise
    except Exception as e:  # a bug: keep its traceback, but the stats file still says what happened
        _write_failure(cfg, f"{type(e).__name__}: {e}")
        raise
    if cfg.stats_json:  # before the summary: a closed terminal must not cost the file
        _write_json(cfg.stats_json, report)
    with contextlib.suppress(OSError):  # stderr gone (hung-up terminal, closed pipe): the outputs are done
        print_summary(report, cfg.progress)
    abandoned = report["frames"].get("abandoned", 0)
    if abandoned:
        log.warning("aborted: %d frame%s in flight abandoned; the outputs hold the %d frames written before",
                    abandoned, "s" * (abandoned != 1), report["frames"]["out"])
    if report["error"]:
        raise _Reported(report["error"], code)
    return code


def _inputs(cfg: RunConfig) -> list[tuple[str, str]]:
    """What the user gave that exists on disk (the source when it is a path, the weights, the preset): never
    written."""
    found = [("source", cfg.source)] if cfg.source and Path(cfg.source).expanduser().exists() else []
    try:
        weights = cfg.weights or str(default_weights())
    except UserError:  # missing bundled weights: said later, in its own words
        weights = None
    if weights and Path(weights).exists():
        found.append(("weights", weights))
    if cfg.pipeline:
        found.append(("preset", cfg.pipeline))
    return [(what, str(Path(p).expanduser())) for what, p in found]


def _kind(output: str) -> str:
    """How an output is named in messages (a path without a suffix is an image folder, as in session.py)."""
    return {"video": "video output", "folder": "image folder", "stdout": "video output"}.get(output_kind(output),
                                                                                            "output file")


def _side_files(output: str) -> list[Path]:
    """What a file output writes before itself: NAME.partial (every file sink; what the video sink keeps after a
    late failure goes only to a name that does not exist yet)."""
    return [partial_path(output)]


def _check_stats_path(path: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]],
                      overwrite: bool = False) -> None:
    # the outputs only against the stats path: an output refused for itself must not stop its stats being written
    if path == STDOUT:
        if any(out == STDOUT for _, out in outputs):
            raise UserError("the video and the stats JSON both go to standard output ('-'); give one of them a file")
        return
    check_outputs(inputs, [("stats JSON", path)], {str(Path(path)): [partial_path(path)]})
    for what, out in outputs:
        if same_file(out, path):
            raise UserError(f"output '{path}' is both the {what} and the stats JSON; give each output its own name")
    if not writable_file(path):
        raise UserError(f"cannot write stats to '{path}': not a writable location")
    check_new([("stats JSON", path)], overwrite)


def failure_report(cfg: RunConfig, error: str, interrupted: bool = False) -> dict[str, Any]:
    """The stats report of a run that never started (source, weights or outputs refused): the same keys as a
    finished run's, nothing processed, ``error`` set."""
    snap = PipelineStats().snapshot(None)
    snap["frames"]["abandoned"] = 0
    snap["elapsed_s"] = 0.0
    return {
        "version": __version__,
        "source": {"spec": cfg.source, "description": None, "fps": None, "decoder": None, "frame_count": None,
                   "live": cfg.live},
        "model": None,
        "outputs": [],
        **snap,
        "interrupted": interrupted,
        "error": error,
        "config": as_dict(cfg),
    }


def report_bad_settings(error: str, stats_json: str | None, source: str | None, weights: str | None,
                        outputs: list[str] | None, preset: str | None) -> None:
    """Settings refused before a config exists: the stats JSON the flags asked for is still written (``config``
    null, ``error`` set), once its own path passes the same checks as a run's."""
    if not stats_json:
        return
    try:
        cfg = RunConfig(source=source or "", weights=weights, outputs=list(outputs or []), stats_json=stats_json,
                        pipeline=preset if preset and Path(preset).is_file() else None)
        _check_stats_path(stats_json, _inputs(cfg), [(_kind(o), o) for o in cfg.outputs])
        report = failure_report(cfg, error)
        report["config"] = None  # the settings were refused: there is no config that would have run
        _write_json(stats_json, report)
    except UserError:  # the stats path itself is the problem: the settings error is the one to report
        return


def _write_failure(cfg: RunConfig, error: str, interrupted: bool = False) -> None:
    if not cfg.stats_json:
        return
    try:
        _write_json(cfg.stats_json, failure_report(cfg, error, interrupted))
    except UserError as e:  # the original error is the one to report
        log.warning("%s", e)


def _write_json(path: str, report: dict[str, Any]) -> None:
    write_json(path, report, "stats")
