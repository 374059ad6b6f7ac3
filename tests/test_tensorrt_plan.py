"""The TensorRT backend's decisions that need no GPU: precisions, profiles, cache names, shape checks, streams,
tensor types. The engine itself is tested under -m cuda (test_backends.py)."""
from __future__ import annotations

import pytest
import torch

from segformer3d_rt.errors import CheckpointError, UserError
from segformer3d_rt.runtime.backends.tensorrt import (
    MAX_BATCH, cache_versions, engine_precision, opt_batch_for, profile_shapes, shape_error, shape_fits, torch_dtype,
    uses_default_stream,
)


def test_bf16_is_refused_before_any_build_and_auto_is_fp16():
    assert engine_precision("auto") == "fp16" and engine_precision("fp32") == "fp32"
    for bad in ("bf16", "int8", "fp64"):
        with pytest.raises(UserError, match=f"not {bad}.*--backend torch for bf16"):
            engine_precision(bad)


def test_the_profiles_optimum_is_the_runs_batch_clamped():
    assert [opt_batch_for(b) for b in (None, 0, 1, 4, MAX_BATCH, 64)] == [1, 1, 1, 4, MAX_BATCH, MAX_BATCH]
    assert profile_shapes((512, 1024), dynamic=False, opt_batch=4) == (
        (1, 3, 512, 1024), (4, 3, 512, 1024), (MAX_BATCH, 3, 512, 1024))
    low, opt, high = profile_shapes((256, 512), dynamic=True, opt_batch=99, max_batch=6)
    assert low == (1, 3, 32, 32) and opt == (6, 3, 256, 512) and high == (6, 3, 256, 512)


def test_engines_of_other_precisions_boxes_or_batches_never_share_a_cache_name():
    base = dict(precision="fp16", box=(512, 1024), opt_batch=1, max_batch=8, trt_version="10.9", gpu="H200")
    names = {cache_versions(**base)}
    for change in ({"precision": "fp32"}, {"box": (256, 512)}, {"box": None}, {"opt_batch": 4},
                   {"max_batch": 4}, {"trt_version": "11.0"}, {"gpu": "H100"}):
        names.add(cache_versions(**{**base, **change}))
    assert len(names) == 8
    assert cache_versions(**base) == cache_versions(**base)  # and the same settings find the same file


def test_shapes_outside_the_profile_are_one_line_naming_the_profile():
    low, high = (1, 3, 32, 32), (8, 3, 512, 1024)
    assert shape_fits((1, 3, 512, 1024), low, high) and shape_fits((8, 3, 32, 64), low, high)
    for bad in ((9, 3, 512, 1024), (1, 3, 544, 1024), (1, 3, 16, 64), (1, 3, 512)):
        assert not shape_fits(bad, low, high)
    msg = shape_error((1, 3, 544, 1024), low, high)
    assert "1x3x544x1024" in msg and "1x3x32x32 to 8x3x512x1024" in msg and "\n" not in msg


def test_default_streams_are_recognised():
    assert uses_default_stream(0) and uses_default_stream(1) and uses_default_stream(2)
    assert not uses_default_stream(0x7F00_1234_5600)


def test_engine_tensor_types_map_to_torch_and_unknown_ones_are_a_checkpoint_error():
    class DataType:  # what trt.DataType members look like: an enum with a .name
        def __init__(self, name: str) -> None:
            self.name = name

    assert torch_dtype(DataType("HALF")) is torch.float16 and torch_dtype("FLOAT") is torch.float32
    assert torch_dtype(DataType("BF16")) is torch.bfloat16 and torch_dtype("INT64") is torch.int64
    with pytest.raises(CheckpointError, match="FP4"):
        torch_dtype(DataType("FP4"))
