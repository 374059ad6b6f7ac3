"""Every setting typed and bounded in one place: presets and flags through the real CLI give one line and exit 2,
naming the setting and the type or limit it wants; the checks come from RunConfig's annotations."""
from __future__ import annotations

import pytest

from helpers import one_error_line
from segformer3d_rt.commands.weights import ConvertConfig, InfoConfig, run_convert, run_info
from segformer3d_rt.errors import UserError
from segformer3d_rt.pipeline.config import RunConfig, build_config, load_preset
from segformer3d_rt.runtime.bundled import preset_names
from segformer3d_rt.runtime.sizes import MAX_SIDE


@pytest.mark.parametrize("line, key, wanted", [
    ('batch_size = "four"', "batch_size", "an integer"),
    ('batch_size = 4.0', "batch_size", "an integer"),
    ('alpha = "half"', "alpha", "a number"),
    ("alpha = nan", "alpha", "a number"),
    ("device = 3", "device", "text"),
    ("outputs = 5", "outputs", "a list of text"),
    ("outputs = [1, 2]", "outputs", "a list of text"),
    ("input_size = [128]", "input_size", "[H, W]"),
    ('input_size = ["a", "b"]', "input_size", "[H, W]"),
    ('show = "false"', "show", "true or false"),  # would have opened the window
    ("show = 0", "show", "true or false"),
    ('live = "yes"', "live", "true or false"),
    ("depth_range = [1]", "depth_range", "[a number, a number]"),
    ("max_frames = 2.5", "max_frames", "an integer"),
])
def test_preset_with_a_wrong_type_names_the_key_and_the_type(tmp_path, capsys, line, key, wanted):
    preset = tmp_path / "bad.toml"
    preset.write_text(line + "\n")
    msg = one_error_line(capsys, ["run", "synthetic:frames=1", "--pipeline", str(preset), "--progress", "none"])
    assert f"'{key}'" in msg and "bad.toml" in msg and wanted in msg, msg


@pytest.mark.parametrize("line, needle", [
    ("input_size = [100000, 100000]", f"at most {MAX_SIDE} per side"),
    ('input_size = "100000x100000"', f"at most {MAX_SIDE} per side"),
    ("input_size = [16, 64]", "at least 32x32"),
    ('input_size = "big"', "not HxW"),
])
def test_preset_sizes_are_bounded(tmp_path, capsys, line, needle):
    preset = tmp_path / "size.toml"
    preset.write_text(line + "\n")
    msg = one_error_line(capsys, ["run", "synthetic:frames=1", "--pipeline", str(preset)])
    assert "input_size" in msg and needle in msg, msg


def test_flags_are_checked_and_bounded(capsys):
    msg = one_error_line(capsys, ["run", "synthetic:frames=1", "--input-size", "100000x100000"])
    assert "--input-size" in msg and f"at most {MAX_SIDE}" in msg, msg
    msg = one_error_line(capsys, ["run", "synthetic:frames=1", "--device", "cuda:abc"])
    assert "cuda:abc" in msg and "cuda:N" in msg, msg
    msg = one_error_line(capsys, ["run", "synthetic:frames=1", "--timeout", "0"])
    assert "--timeout" in msg, msg


def test_device_typos_in_the_other_commands_are_one_line(capsys):
    msg = one_error_line(capsys, ["eval", "--data", "synthetic:n=1", "--device", "cuda:abc"])
    assert "cuda:abc" in msg, msg


def test_synthetic_source_size_is_bounded(capsys):
    # found when the source opens, before any frame is rendered (a 20000x20000 world would fill memory)
    msg = one_error_line(capsys, ["run", "synthetic:size=20000x20000,frames=1", "--progress", "none"])
    assert "20000x20000" in msg and f"at most {MAX_SIDE}" in msg, msg
    msg = one_error_line(capsys, ["train", "--data", "synthetic:size=20000x20000", "--steps", "1"])
    assert f"at most {MAX_SIDE}" in msg, msg


def test_well_typed_presets_convert_to_the_annotated_types(tmp_path):
    preset = tmp_path / "ok.toml"
    preset.write_text('input_size = [64, 96]\noutputs = "one.mp4"\nalpha = 1\ndepth_range = [1, 80]\n'
                      "show = false\nbatch_size = 2\n")
    cfg = build_config(str(preset), {"source": "synthetic:"})
    assert cfg.input_size == (64, 96) and cfg.outputs == ["one.mp4"] and cfg.alpha == 1.0
    assert isinstance(cfg.alpha, float) and cfg.depth_range == (1.0, 80.0) and cfg.show is False
    preset.write_text('input_size = "64x96"\n')
    assert build_config(str(preset), {"source": "synthetic:"}).input_size == (64, 96)


def test_bundled_presets_pass_the_typed_checks():
    names = preset_names()
    assert {"webcam", "dashcam-file", "benchmark"} <= set(names)
    for name in names:
        build_config(name, {"source": "synthetic:"})
        assert load_preset(name)


def test_a_config_built_in_python_is_checked_the_same_way():
    with pytest.raises(UserError, match="'batch_size' must be an integer"):
        RunConfig(source="synthetic:", batch_size="four").validate()
    with pytest.raises(UserError, match="'show' must be true or false"):
        RunConfig(source="synthetic:", show="false").validate()
    with pytest.raises(UserError, match="at most"):
        RunConfig(source="synthetic:", input_size=(100000, 100000)).validate()
    cfg = RunConfig(source="synthetic:", depth_range=[1, 2]).validate()
    assert cfg.depth_range == (1.0, 2.0)


def test_weights_commands_check_their_config_types():
    with pytest.raises(UserError, match="'num_classes' must be an integer"):
        run_info(InfoConfig(variant="b0", num_classes="19"))
    with pytest.raises(UserError, match="'half' must be true or false"):
        run_convert(ConvertConfig("in.safetensors", "out.safetensors", half="yes"))
