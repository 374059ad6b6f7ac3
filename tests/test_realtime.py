"""The CPU pipeline sized for real time: the encoder preset follows --realtime (checked in the written stream's own
x264 settings), and a backend compiled for the run's shape before the first frame pads a short last batch into it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from segformer3d_rt import build_model
from segformer3d_rt.model.folding import fold
from segformer3d_rt.pipeline.sinks.encoders import FILE_PRESET, REALTIME_PRESETS, SMALL_CPU, choose_preset
from segformer3d_rt.runtime.backends import open_backend
from segformer3d_rt.runtime.backends.fidelity import check_input, compare

CPU = torch.device("cpu")


def test_preset_given_wins_files_keep_medium_real_time_is_fast():
    assert choose_preset("slow", realtime=True, cores=2) == ("slow", "as given")
    assert choose_preset(None, realtime=False, cores=64)[0] == FILE_PRESET == "medium"
    assert choose_preset(None, realtime=True, cores=SMALL_CPU)[0] == REALTIME_PRESETS["small"] == "superfast"
    assert choose_preset(None, realtime=True, cores=SMALL_CPU + 1)[0] == REALTIME_PRESETS["large"] == "veryfast"


def x264_settings(path: Path) -> dict[str, str]:
    """The options x264 itself wrote into the stream (its SEI user data: 'x264 - core ... options: a=b c=d ...')."""
    text = path.read_bytes().decode("latin-1")
    m = re.search(r"x264 - core .*? options: ([^\x00]*)", text)
    assert m, "no x264 settings in the stream"
    return dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)


def run(tmp_path: Path, name: str, *extra: str) -> tuple[dict[str, str], str]:
    out = tmp_path / f"{name}.mp4"
    r = subprocess.run([sys.executable, "-m", "segformer3d_rt", "run", "synthetic:frames=6,size=128x256", "-o",
                        str(out), "--no-live", "--input-size", "64x128", "--progress", "none", "--device", "cpu",
                        *extra], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return x264_settings(out), r.stderr


def test_realtime_writes_with_a_fast_preset_and_keeps_crf(tmp_path):
    file_run, file_log = run(tmp_path, "file")
    live_run, live_log = run(tmp_path, "realtime", "--realtime")
    # medium searches sub-pixel motion at level 7 and looks 40 frames ahead; veryfast/superfast at 2/1 and 10/0
    assert int(file_run["subme"]) == 7 and int(file_run["rc_lookahead"]) == 40
    assert int(live_run["subme"]) <= 2 and int(live_run.get("rc_lookahead", 0)) <= 10  # 0: not written
    assert float(file_run["crf"]) == float(live_run["crf"]) == 23
    assert "preset medium (file run)" in file_log and "(real time on" in live_log
    given, _ = run(tmp_path, "given", "--realtime", "--preset", "slow")
    assert int(given["subme"]) == 8  # x264's slow


def test_openvino_pads_a_short_batch_into_the_compiled_shape():
    torch.manual_seed(0)
    model = build_model("b0")
    backend = open_backend("openvino", model, CPU, "fp32", (64, 128))
    backend.prepare((4, 3, 64, 128))
    compiled = len(backend._compiled)
    x = check_input(model.meta, (64, 128), 3)
    out = backend(x)
    assert len(backend._compiled) == compiled  # nothing compiled mid-run
    with torch.no_grad():
        ref = fold(model)(x)
    assert out.seg_logits.shape[0] == 3
    fid = compare(ref, out, model.meta)
    assert fid.max_abs_seg < 1e-4 and fid.max_abs_depth < 1e-4
