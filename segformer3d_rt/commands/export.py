"""`export`: a checkpoint -> ONNX, OpenVINO IR or a TensorRT engine, metadata inside, checked against torch."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..runtime.paths import check_new, no_stdout, same_file
from ..runtime.settings import check_config, setting
from ..runtime.sizes import MAX_SIDE, check_multiple

SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}
# the weights' precision in the file; the first is what auto means
PRECISIONS = {"onnx": ("fp32", "fp16"), "openvino": ("fp32", "fp16"), "tensorrt": ("fp16", "fp32")}
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}  # what checks each format


@dataclass
class ExportConfig:
    """What `export` writes: ``weights`` (None: the bundled ones) as ``format`` to ``output``."""

    weights: str | None = setting(None, positional=True, help="checkpoint", default_text="the bundled weights")
    format: str = setting("onnx", choices=tuple(SUFFIXES), required=True, help="what to write")
    output: str = setting("", short="-o", required=True,
                          help="output file: .onnx, .xml (+ .bin beside it) or .engine")
    input_size: tuple[int, int] | None = setting(None, size=MAX_SIDE, metavar="HxW", default_text="the checkpoint's "
                                                 "input size", help="export size")
    dynamic: bool = setting(False, help="let H and W vary (the batch always may)")
    overwrite: bool = setting(False, help="replace outputs that already exist (an input is never written)")
    precision: str = setting("auto", choices=("auto", "fp32", "fp16"),
                             help="onnx: fp32 | fp16 (LayerNorm and softmax stay fp32); openvino: fp32 | fp16 "
                                  "(weights stored as fp16); tensorrt: fp16 | fp32. auto: fp16 for tensorrt, fp32 "
                                  "otherwise")
    check_image: str | None = setting(None, metavar="PATH", default_text="a procedural driving scene",
                                      help="check the export on this image")


def _checked(cfg: ExportConfig) -> tuple[Path, str]:
    check_config(cfg)
    no_stdout(cfg.output, "an export (a file its backend opens by name)")
    out = Path(cfg.output)
    want = SUFFIXES[cfg.format]
    if out.suffix.lower() != want:
        raise UserError(f"--format {cfg.format} writes a {want} file; give -o NAME{want}, not '{cfg.output}'")
    precision = PRECISIONS[cfg.format][0] if cfg.precision == "auto" else cfg.precision
    if precision not in PRECISIONS[cfg.format]:
        raise UserError(f"--format {cfg.format} exports {' or '.join(PRECISIONS[cfg.format])}, not {cfg.precision}")
    if cfg.input_size is not None:
        check_multiple(cfg.input_size, "input size")
    return out, precision


def _read_image(path: str | None):
    if path is None:
        return None
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"--check-image '{path}' cannot be read as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def run_export(cfg: ExportConfig) -> int:
    out, precision = _checked(cfg)
    import torch

    from ..runtime.bundled import default_weights

    device = torch.device("cuda") if cfg.format == "tensorrt" else torch.device("cpu")
    if cfg.format == "tensorrt":  # no GPU or no tensorrt: one line, before any work
        from ..runtime.backends.tensorrt import require_tensorrt

        require_tensorrt(device)
    weights = Path(cfg.weights) if cfg.weights else default_weights()
    if any(same_file(p, weights) for p in (out, out.with_suffix(".bin"))):
        raise UserError(f"'{out}' is the checkpoint itself; choose another output name")
    check_new([("output", out)] + ([("weights file", out.with_suffix(".bin"))] if cfg.format == "openvino" else []),
              cfg.overwrite)
    image = _read_image(cfg.check_image)

    from ..model import load_model

    model = load_model(weights)
    size = tuple(cfg.input_size or model.meta.input_size)
    if cfg.input_size is None:
        check_multiple(size, "the checkpoint's input size (give --input-size)")
    t0 = time.perf_counter()
    _write(cfg.format, model, out, size, cfg.dynamic, precision)
    shape = f"{size[0]}x{size[1]}" + (", H and W dynamic" if cfg.dynamic else ", fixed size")
    print(f"wrote {out} ({cfg.format}, {precision}, {shape}, batch dynamic) in {time.perf_counter() - t0:.1f} s")
    return _self_check(model, out, cfg, size, image, device)


def _write(fmt: str, model, out: Path, size: tuple[int, int], dynamic: bool, precision: str) -> None:
    from ..model.export import export_onnx, onnx_metadata, save_onnx

    if fmt == "onnx":
        save_onnx(export_onnx(model, size, dynamic=dynamic, precision=precision), out)
    elif fmt == "openvino":
        from ..runtime.backends.openvino import model_from_onnx, save_ir

        proto = export_onnx(model, size, dynamic=dynamic)
        save_ir(model_from_onnx(proto, *onnx_metadata(proto, str(out))), out, compress_to_fp16=precision == "fp16")
    else:
        from ..runtime.backends.tensorrt import build_engine_file, write_engine

        write_engine(out, build_engine_file(model, size, dynamic, precision))


def _self_check(model, out: Path, cfg: ExportConfig, size: tuple[int, int], image, device) -> int:
    """The exported file, opened as `run --weights` opens it, against the torch model on one frame."""
    import torch

    from ..model.folding import fold
    from ..runtime.backends import open_backend
    from ..runtime.backends.fidelity import check_input, compare

    backend = open_backend(BACKEND_OF[cfg.format], out, device, "fp32" if cfg.format == "openvino" else "auto",
                           size)
    expected = model.meta.with_(input_size=size)
    if backend.meta != expected:
        raise UserError(f"'{out}': the metadata read back differs from the checkpoint's (kept the file; "
                        "please report this)")
    x = check_input(expected, size, image=image)
    with torch.no_grad():
        ref = fold(model.cpu().eval())(x)
        got = backend(x.to(device))
    fid = compare(ref, got, expected)
    frame = "the given image" if image is not None else "a procedural driving scene"
    print(f"check against torch ({backend.name} {backend.precision}, {frame} at {size[0]}x{size[1]}): {fid.line()}")
    meta = backend.meta
    depth = meta.depth.describe() if meta.depth else "no depth head"
    print(f"metadata inside: {meta.num_classes} classes, {depth}, mean/std {meta.mean}/{meta.std}, "
          f"input size {size[0]}x{size[1]}")
    if cfg.format == "openvino":
        from ..runtime.backends.openvino import has_bf16

        if has_bf16():
            auto = open_backend("openvino", out, device, "auto", size)
            print(f"on this CPU `run --weights {out.name}` computes in {auto.precision}: {auto.note}")
    if not fid.passes():
        print(f"segformer3d-rt: warning: the export differs from torch beyond the thresholds (argmax >= 99.5%, "
              f"depth <= 1%); '{out}' is kept", file=sys.stderr)
        return 1
    return 0
