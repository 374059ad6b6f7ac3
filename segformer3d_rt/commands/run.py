"""`run`: the pipeline on a source, with Ctrl-C handling, the printed summary and the stats JSON file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..pipeline.config import RunConfig, build_config
from ..pipeline.dashboard import print_summary
from ..pipeline.session import execute
from ..runtime.paths import writable_file
from ._signals import Signals

__all__ = ["RunConfig", "build_config", "run_pipeline"]


class _Reported(UserError):
    """An error raised after the summary was printed and the outputs were finalised."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def run_pipeline(cfg: RunConfig) -> int:
    """Run the whole pipeline; returns the process exit code (errors raise a one-line UserError)."""
    if cfg.stats_json and not writable_file(cfg.stats_json):  # fail before processing, not after
        raise UserError(f"cannot write stats to '{cfg.stats_json}': not a writable location")
    code, report = execute(cfg, interrupts=Signals)
    print_summary(report, cfg.progress)
    if cfg.stats_json:
        _write_json(cfg.stats_json, report)
    if report["error"]:
        raise _Reported(report["error"], code)
    return code


def _write_json(path: str, report: dict[str, Any]) -> None:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".partial")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        tmp.replace(p)
    except OSError as e:
        raise UserError(f"cannot write stats to '{path}': {e.strerror or e}") from None
