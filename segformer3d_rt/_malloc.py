"""Allocator settings for the command line on glibc (Linux); nothing happens elsewhere.

glibc serves every allocation above a threshold with a fresh mmap and unmaps it on free, so each network
forward on CPU page-faults its larger activations in again (tens of MB at batch 4): measured here, CPU
inference ran 2x slower and half of a pipeline's time went to the kernel. mallopt() cannot raise the
threshold past 32 MiB, the MALLOC_*_ environment variables can, and glibc reads them only at start-up:
so the command re-executes itself once with them set. Never on import: embedding applications keep theirs.
"""
from __future__ import annotations

import os
import platform
import sys

_MARK = "SEGFORMER3D_RT_MALLOC_SET"
SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}


def reexec_with_tuned_malloc() -> None:
    """Replace this process by the same command with SETTINGS in its environment (once; not when the user
    set any MALLOC_ variable, not off glibc, not when the interpreter's command line is unknown)."""
    if os.environ.get(_MARK) or any(k in os.environ for k in SETTINGS) or sys.platform != "linux":
        return
    if platform.libc_ver()[0] != "glibc" or not getattr(sys, "orig_argv", None) or not sys.executable:
        return
    env = {**os.environ, **SETTINGS, _MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # carry on with the default allocator
