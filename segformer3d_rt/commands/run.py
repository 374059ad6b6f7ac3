"""`run`: the pipeline on a source (the work is in ``_run.py``, which `attention` shares)."""
from __future__ import annotations

from ..pipeline.config import RunConfig, build_config
from ._run import report_bad_settings, run_config

__all__ = ["RunConfig", "build_config", "report_bad_settings", "run_pipeline"]


def run_pipeline(cfg: RunConfig) -> int:
    """Run the whole pipeline; returns the process exit code (errors raise a one-line UserError)."""
    return run_config(cfg)
