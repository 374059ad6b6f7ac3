"""scripts/gpu_check.sh --dry-run: the GPU run's every step, on the CPU with tiny sizes (issue 23)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_summarises_every_target(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    steps = [ln.split("\t") for ln in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["install", "versions", "pytest_cuda", "bench_model", "bench_backends",
                                     "bench_file", "run_file", "run_live", "summary"]
    assert all(s[1] == "0" for s in steps), steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["versions"]["torch"]
    names = " | ".join(t["target"] for t in summary["targets"])
    for needle in ("1024x2048", "512x1024", "every frame kept", "slowest stage", "two frame intervals", "no drops"):
        assert needle in names, names
    assert not any(t["figure"].startswith("missing") for t in summary["targets"]), summary["targets"]
    assert (out / "summary.txt").read_text().startswith("DRY RUN")
    # the live run and the file were really written
    assert json.loads((out / "run_file.json").read_text())["frames"]["out"] == 12
    assert (out / "file.mp4").stat().st_size > 0 and (out / "pytest_cuda.xml").is_file()


def test_the_summary_names_what_is_missing_and_refuses_a_used_folder(tmp_path):
    (tmp_path / "r").mkdir()
    subprocess.run([sys.executable, "scripts/gpu_summary.py", str(tmp_path / "r")], cwd=REPO, check=True)
    rows = json.loads((tmp_path / "r" / "summary.json").read_text())["targets"]
    assert rows and all(r["met"] is None and r["figure"].startswith("missing") for r in rows)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(tmp_path / "r")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("already holds results; give another --out")
