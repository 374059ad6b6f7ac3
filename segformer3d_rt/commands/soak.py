"""`soak`: a long live run with memory, threads, file descriptors and CPU sampled, to show they stay flat.

The run is an ordinary `run` (same RunConfig) held under ``benchmark.soak``'s sampler; the JSON holds every
sample, the first/last-quarter medians and the run's own report. Ctrl-C ends it early and keeps what was
sampled. The rich dashboard is only drawn on a terminal: elsewhere set TTY_COMPATIBLE=1 (rich's own switch) to
have its cost measured too.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from ..benchmark.soak import FLAT_FIELDS, soak
from ..errors import UserError
from ..pipeline.config import RunConfig
from ..runtime.paths import STDOUT, check_json_output, check_new, write_json
from ..runtime.progress import progress_mode
from ..runtime.settings import check_config, setting
from ._signals import Signals, setup_interrupts

__all__ = ["SoakConfig", "run_soak"]

log = logging.getLogger(__name__)


class _Failed(UserError):
    """The run ended with an error after the samples were written."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


@dataclass
class SoakConfig:
    """`soak`: ``run`` (a validated RunConfig, normally live with ``max_frames``) sampled every ``interval_s``;
    the samples written to ``json`` (NAME.partial first, then renamed)."""

    run: RunConfig = setting(cli=False, help="the run that is sampled")
    interval_s: float = setting(5.0, low=0.0, low_open=True, high=86_400.0, flag="--interval", metavar="S",
                                help="seconds between samples")
    json: str | None = setting(None, metavar="PATH", help="write every sample, the summary and the run's report")
    overwrite: bool = setting(False, help="replace outputs that already exist (an input is never written)")


# the settings of `run` that `soak` takes (live defaults to on, even for files: paced, newest frame wins)
RUN_SETTINGS = ("source", "max_frames", "live", "outputs", "weights", "pipeline", "input_size", "device",
                "precision", "backend", "timeout_s", "progress")
SOAK_DEFAULTS = {"live": True}


def run_soak(cfg: SoakConfig) -> int:
    check_config(cfg)
    run = replace(cfg.run, stats_json=None, overwrite=cfg.overwrite)  # the soak JSON holds the run's report
    check_new([("output", o) for o in run.outputs], cfg.overwrite)
    if cfg.json:
        _check_json(cfg.json, run, cfg.overwrite)
    mode = progress_mode(run.progress, Console(stderr=True))
    if mode == "rich" and not Console(stderr=True).is_terminal:
        log.warning("the dashboard is not drawn off a terminal: its CPU is not measured (set TTY_COMPATIBLE=1)")
    with setup_interrupts():
        code, report = soak(run, cfg.interval_s, interrupts=Signals)
    report["dashboard"] = mode
    if cfg.json:  # before the summary: the samples are the work of the whole run
        _write_json(cfg.json, report)
    with contextlib.suppress(OSError):  # beside a JSON on standard output, the summary goes to standard error
        print(summary_text(report), file=sys.stderr if cfg.json == STDOUT else sys.stdout)
    error = report["run"]["error"]
    if error:
        raise _Failed(error, code)
    return code


def _check_json(path: str, run: RunConfig, overwrite: bool) -> None:
    given = [("source", run.source)] if run.source and Path(run.source).expanduser().exists() else []
    given += [("weights", run.weights)] if run.weights else []
    given += [("preset", run.pipeline)] if run.pipeline else []
    check_json_output(path, "soak JSON", given, [("output", o) for o in run.outputs], overwrite=overwrite)


def _write_json(path: str, report: dict[str, Any]) -> None:
    write_json(path, report, "the soak JSON")


def summary_text(report: dict[str, Any]) -> str:
    """The first/last-quarter medians as a small table."""
    s = report["summary"]
    head = (f"soak: {s['frames_out']} frames out in {s['duration_s']:.0f} s, {s['intervals']} intervals of "
            f"{report['interval_s']:g} s (dashboard: {report.get('dashboard', '?')})")
    if not s.get("quarters"):
        return head + "\n  too short to compare its first and last quarters (fewer than 4 intervals)"
    rows = [head, f"  {'median':<18}{'first quarter':>14}{'last quarter':>14}{'change':>10}"]
    for key in FLAT_FIELDS:
        q = s["quarters"][key]
        cells = ["-" if v is None else f"{v:.2f}" for v in (q["first"], q["last"], q["change"])]
        rows.append(f"  {key:<18}{cells[0]:>14}{cells[1]:>14}{cells[2]:>10}")
    return "\n".join(rows)
