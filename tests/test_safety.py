"""Nothing the user gave is written over: outputs that are an input, another output or inside an input folder are
refused before any work (one line, exit 2), through the real CLI on media the tests make; inputs sharing a stem get
distinct outputs; the stats JSON says why a run failed; broken weights and read-only folders are one line."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from helpers import one_error_line
from segformer3d_rt import cli

FAST = ["--input-size", "64x96", "--progress", "none", "--preset", "ultrafast", "--device", "cpu"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A tiny synthetic drive, made by the project's own `synth` command."""
    path = tmp_path_factory.mktemp("media") / "drive.mp4"
    assert cli.main(["synth", "-o", str(path), "--frames", "6", "--size", "64x96"]) == 0
    return path


@pytest.fixture
def video(clip, tmp_path) -> Path:
    """A private copy of the clip that a test may try (and must fail) to overwrite."""
    path = tmp_path / "in.mp4"
    path.write_bytes(clip.read_bytes())
    return path


def write_image(path: Path, h: int, w: int, value: int) -> None:
    rng = np.random.default_rng(value)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "x.jpg", 40, 60, 1)
    write_image(folder / "x.png", 50, 70, 2)  # same stem as x.jpg, another size
    write_image(folder / "y.png", 36, 48, 3)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


# -- outputs onto inputs -------------------------------------------------------------------------------------

def test_video_output_onto_its_input_is_refused(video, capsys):
    before = digest(video)
    one_error_line(capsys, ["run", str(video), "-o", str(video), *FAST], "in.mp4", "overwrite")
    assert digest(video) == before
    assert sorted(p.name for p in video.parent.iterdir()) == ["in.mp4"]  # no in.mp4.partial either


def test_stats_json_onto_the_input_is_refused(video, tmp_path, capsys):
    before = digest(video)
    one_error_line(capsys, ["run", str(video), "-o", str(tmp_path / "out.mp4"), "--stats-json", str(video), *FAST],
                   "stats json", "in.mp4")
    assert digest(video) == before
    assert not (tmp_path / "out.mp4").exists()


def test_links_to_the_input_are_the_input(video, tmp_path, capsys):
    before = digest(video)
    (tmp_path / "sym.mp4").symlink_to(video)
    os.link(video, tmp_path / "hard.mp4")
    one_error_line(capsys, ["run", str(video), "-o", str(tmp_path / "sym.mp4"), *FAST], "overwrite")
    one_error_line(capsys, ["run", str(tmp_path / "hard.mp4"), "-o", str(video), *FAST], "overwrite")
    one_error_line(capsys, ["run", str(video), "-o", str(tmp_path / "sub" / ".." / "in.mp4"), *FAST], "overwrite")
    assert digest(video) == before


def test_an_input_named_like_the_partial_file_is_not_written(video, tmp_path, capsys):
    partial = tmp_path / "out.mp4.partial"
    partial.write_bytes(video.read_bytes())
    before = digest(partial)
    one_error_line(capsys, ["run", str(partial), "-o", str(tmp_path / "out.mp4"), *FAST], "out.mp4.partial")
    assert digest(partial) == before


def test_weights_are_an_input_too(video, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really weights")
    one_error_line(capsys, ["run", str(video), "--weights", str(weights), "--stats-json", str(weights), *FAST],
                   "weights")
    assert weights.read_bytes() == b"not really weights"


def test_the_preset_file_is_an_input_too(video, tmp_path, capsys):
    preset = tmp_path / "mine.toml"
    preset.write_text("batch_size = 2\n")
    one_error_line(capsys, ["run", str(video), "--pipeline", str(preset), "--stats-json", str(preset), *FAST],
                   "preset", "mine.toml")
    assert preset.read_text() == "batch_size = 2\n"


def test_image_folder_onto_itself_or_inside_it_is_refused(photos, capsys):
    before = snapshot(photos)
    one_error_line(capsys, ["run", str(photos), "-o", str(photos), *FAST], "source folder")
    one_error_line(capsys, ["run", str(photos) + "/", "-o", str(photos / "annotated"), *FAST], "inside")
    one_error_line(capsys, ["run", str(photos), "-o", str(photos / "all.mp4"), *FAST], "inside")
    assert snapshot(photos) == before
    assert sorted(p.name for p in photos.iterdir()) == ["x.jpg", "x.png", "y.png"]


def test_single_image_whose_output_would_replace_it_is_refused(photos, capsys):
    before = snapshot(photos)
    one_error_line(capsys, ["run", str(photos / "x.png"), "-o", str(photos), *FAST], "--overwrite")
    # --overwrite lets a run write into a folder, never over its input
    one_error_line(capsys, ["run", str(photos / "x.png"), "-o", str(photos), "--overwrite", *FAST], "x.png",
                   "overwrite")
    assert snapshot(photos) == before


# -- outputs onto outputs --------------------------------------------------------------------------------------

def test_the_same_output_twice_is_refused_before_any_work(video, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    one_error_line(capsys, ["run", str(video), "-o", str(out), "-o", str(tmp_path / "." / "a.mp4"), *FAST],
                   "given twice")
    one_error_line(capsys, ["run", str(video), "-o", str(out), "--stats-json", str(out), *FAST],
                   "video output and the stats json")
    one_error_line(capsys, ["run", str(video), "-o", str(tmp_path / "f"), "-o", str(tmp_path / "f/"), *FAST],
                   "given twice")
    assert not out.exists() and not (tmp_path / "f").exists()
    assert not list(tmp_path.glob("*.partial"))


# -- distinct names, real runs ------------------------------------------------------------------------------------

def test_inputs_sharing_a_stem_get_distinct_outputs(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", str(photos), "-o", str(out), *FAST]) == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x.jpg.png", "x.png.png", "y.png"]
    # each output is its own input annotated: same size as that input
    shapes = {n: cv2.imread(str(out / n)).shape[:2] for n in names}
    assert shapes == {"x.jpg.png": (40, 60), "x.png.png": (50, 70), "y.png": (36, 48)}


def test_odd_frame_sizes_are_padded_with_one_line_saying_so(tmp_path, caplog):
    image = tmp_path / "odd.png"
    write_image(image, 41, 63, 4)
    out = tmp_path / "odd.mp4"
    with caplog.at_level(logging.INFO):
        assert cli.main(["run", str(image), "-o", str(out), *FAST]) == 0
    said = [r.getMessage() for r in caplog.records if "padded" in r.getMessage()]
    assert len(said) == 1 and "63x41" in said[0] and "64x42" in said[0], said
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 1 and frames[0].shape == (42, 64, 3)


# -- the stats JSON says why --------------------------------------------------------------------------------------

def test_stats_json_is_written_when_the_source_cannot_be_opened(tmp_path, capsys):
    stats = tmp_path / "stats.json"
    one_error_line(capsys, ["run", str(tmp_path / "missing.mp4"), "--stats-json", str(stats), *FAST],
                   "missing.mp4")
    report = json.loads(stats.read_text())
    assert "missing.mp4" in report["error"] and report["interrupted"] is False
    assert report["frames"] == {"in": 0, "out": 0, "dropped": 0, "dropped_by_stage": {}, "abandoned": 0}
    assert report["config"]["source"].endswith("missing.mp4") and report["source"]["spec"].endswith("missing.mp4")


def test_stats_json_says_why_an_output_was_refused(video, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    one_error_line(capsys, ["run", str(video), "-o", str(video), "--stats-json", str(stats), *FAST], "overwrite")
    report = json.loads(stats.read_text())
    assert "overwrite" in report["error"] and report["frames"]["out"] == 0 and report["outputs"] == []


def test_random_bytes_named_pth_are_not_a_checkpoint(video, tmp_path, capsys):
    junk = tmp_path / "model.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    stats = tmp_path / "stats.json"
    line = one_error_line(capsys, ["run", str(video), "--weights", str(junk), "--stats-json", str(stats), *FAST],
                          "model.pth", "not a checkpoint")
    assert "python objects" not in line.lower()
    assert "not a checkpoint" in json.loads(stats.read_text())["error"]
    one_error_line(capsys, ["info", str(junk)], "not a checkpoint", "corrupt")


def test_legacy_torch_files_still_get_past_the_format_check(tmp_path, capsys):
    legacy = tmp_path / "old.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, legacy, _use_new_zipfile_serialization=False)
    one_error_line(capsys, ["info", str(legacy)], "unknown layout", "conv1.weight")


# -- convert -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_weights(tmp_path_factory) -> Path:
    from segformer3d_rt import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("b0", num_classes=3), tmp_path_factory.mktemp("w") / "b0.safetensors")


def test_convert_onto_its_input_is_refused(small_weights, tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    src.write_bytes(small_weights.read_bytes())
    before = digest(src)
    one_error_line(capsys, ["convert", str(src), "-o", str(src)], "overwrite")
    assert digest(src) == before


@contextlib.contextmanager
def read_only_folder(tmp_path: Path):
    """A folder nothing can be written into: a read-only tmpfs where we may mount one (root), else chmod 555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("running as root without permission to mount a read-only folder (chmod does not bind root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_convert_into_a_read_only_folder_is_one_line(small_weights, tmp_path, capsys):
    with read_only_folder(tmp_path) as ro:
        one_error_line(capsys, ["convert", str(small_weights), "-o", str(ro / "x.safetensors")], "x.safetensors")
        one_error_line(capsys, ["convert", str(small_weights), "-o", str(ro / "sub" / "x.safetensors")],
                       "x.safetensors")
        assert not any(ro.iterdir())


def test_save_into_a_read_only_folder_keeps_the_first_error(small_weights, tmp_path):
    # past the command's check (e.g. the folder turned read-only meanwhile): still one CheckpointError
    from segformer3d_rt import build_model, save_checkpoint
    from segformer3d_rt.errors import CheckpointError

    with read_only_folder(tmp_path) as ro:
        with pytest.raises(CheckpointError, match="cannot write"):
            save_checkpoint(build_model("b0", num_classes=3), ro / "x.safetensors")


@pytest.mark.parametrize("bad", [["--alpha", "2"], ["--input-size", "100000x100000"], ["--pipeline", "BADTYPES"]],
                         ids=["out-of-range", "size-bound", "preset-type"])
def test_refused_settings_still_write_the_stats_json(video, tmp_path, capsys, bad):
    """The stats JSON is written on every exit path, settings refused before a config exists included."""
    if bad[-1] == "BADTYPES":
        preset = tmp_path / "bad.toml"
        preset.write_text('batch_size = "four"\n')
        bad = ["--pipeline", str(preset)]
    stats = tmp_path / "stats.json"
    line = one_error_line(capsys, ["run", str(video), "-o", str(tmp_path / "out.mp4"), "--stats-json", str(stats),
                                   *bad])
    report = json.loads(stats.read_text())
    assert report["error"] == line.split(": ", 1)[1] or report["error"] in line
    assert report["config"] is None and report["frames"]["out"] == 0 and report["source"]["spec"] == str(video)
    assert not (tmp_path / "out.mp4").exists()


def test_refused_settings_never_write_a_stats_json_onto_an_input(video, tmp_path, capsys):
    before = digest(video)
    one_error_line(capsys, ["run", str(video), "--stats-json", str(video), "--alpha", "2"], "alpha")
    assert digest(video) == before


# -- eval and bench: their JSON is checked before the work, so minutes of evaluation never end in a lost report

def test_eval_and_bench_json_onto_the_weights_is_refused_before_any_work(small_weights, tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    src.write_bytes(small_weights.read_bytes())
    before = digest(src)
    one_error_line(capsys, ["eval", "--weights", str(src), "--data", "synthetic:n=1,size=64x128", "--json", str(src)],
                   "overwrite", "weights")
    one_error_line(capsys, ["bench", "--weights", str(src), "--sizes", "64x64", "--iters", "1", "--json", str(src)],
                   "overwrite", "weights")
    assert digest(src) == before


def test_eval_json_inside_the_dataset_or_in_a_read_only_folder_is_one_line(small_weights, tmp_path, capsys):
    data = tmp_path / "camvid"
    data.mkdir()
    one_error_line(capsys, ["eval", "--weights", str(small_weights), "--data", f"camvid:{data}",
                            "--json", str(data / "r.json")], "inside the dataset folder")
    assert not any(data.iterdir())
    with read_only_folder(tmp_path) as ro:
        # refused at once: the dataset is not even opened (there is none at that path)
        one_error_line(capsys, ["eval", "--weights", str(small_weights), "--data", f"camvid:{tmp_path / 'none'}",
                                "--json", str(ro / "r.json")], "r.json", "not a writable location")
