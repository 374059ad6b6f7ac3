"""The command line re-executes itself once with glibc allocator settings (segformer3d_rt/_malloc.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = ("import os; from segformer3d_rt._malloc import reexec_with_tuned_malloc; reexec_with_tuned_malloc(); "
          "print(os.environ.get('MALLOC_MMAP_THRESHOLD_'), os.environ.get('SEGFORMER3D_RT_MALLOC_SET'))")


@pytest.mark.skipif(sys.platform != "linux", reason="the allocator settings apply to glibc Linux only")
def test_command_line_reexecs_once_with_allocator_settings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "SEGFORMER3D_RT_MALLOC_SET"}
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(256 << 20), "1"]
    # a user's own setting wins and nothing is re-executed
    r = subprocess.run([sys.executable, "-c", _PROBE], env={**env, "MALLOC_MMAP_THRESHOLD_": "4096"},
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["4096", "None"]
    # the real command still answers normally through the re-exec
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "--version"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
