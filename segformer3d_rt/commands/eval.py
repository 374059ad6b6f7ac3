"""`eval`: load, evaluate, print a per-class table and depth metrics (or JSON)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from ..runtime.backends import BACKENDS
from ..runtime.device import PRECISION_CHOICES
from ..runtime.settings import check_config, setting
from ..runtime.sizes import MAX_SIDE


def _seg_table(result: dict, seg: dict, console: Console) -> None:
    space = result.get("label_space", "model")
    where = "" if space == "model" else f", {space} classes; the model's classes grouped onto them"
    t = Table(title=f"segmentation ({result['scored']['segmentation']} images with labels{where})",
              title_justify="left")
    t.add_column("class")
    t.add_column("IoU", justify="right")
    for name, iou in zip(result["classes"], seg["iou"]):
        t.add_row(name, "-" if iou is None or iou != iou else f"{iou:.3f}")
    t.add_row("[bold]mIoU[/]", f"{seg['miou']:.3f}" if seg["miou"] == seg["miou"] else "-")
    t.add_row("[bold]mIoU (classes present)[/]",
              f"{seg['miou_present']:.3f}" if seg["miou_present"] == seg["miou_present"] else "-")
    t.add_row("pixel accuracy", f"{seg['pixel_accuracy']:.3f}")
    console.print(t)


def _depth_table(result: dict, console: Console) -> None:
    d = result["depth"]
    dt = Table(title=f"depth ({result['scored']['depth']} images with depth, {result['depth_unit']}, ground truth "
                     f"<= {result['max_depth']})", title_justify="left")
    keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
    dt.add_column("")
    for k in keys:
        dt.add_column(k, justify="right")
    dt.add_row("as predicted", *(f"{d[k]:.4f}" for k in keys))
    ds = result.get("depth_median_scaled")
    if ds:
        dt.add_row("median-scaled", *(f"{ds[k]:.4f}" for k in keys))
    console.print(dt)


def _depth_by_class_table(result: dict, console: Console) -> None:
    rows = result.get("depth_by_class") or {}
    if not rows:
        return
    t = Table(title="depth by predicted class (median scale of the whole image)", title_justify="left")
    for col in ("class", "pixels", "abs_rel", "abs_rel median-scaled", "delta1 median-scaled"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["count"]):
        t.add_row(name, str(r["count"]), f"{r['abs_rel']:.3f}", f"{r['abs_rel_median_scaled']:.3f}",
                  f"{r['delta1_median_scaled']:.3f}")
    console.print(t)


def print_report(result: dict, console: Console) -> None:
    partial = f" of {result['of']} (interrupted)" if result.get("interrupted") else ""
    scored = result["scored"]
    console.print(f"{result['images']} images{partial}: {scored['segmentation']} scored for segmentation, "
                  f"{scored['depth']} for depth", highlight=False)
    missing = result["without_ground_truth"]
    if missing:
        console.print(f"{len(missing)} without ground truth (not scored): {', '.join(missing[:5])}"
                      f"{' ...' if len(missing) > 5 else ''}", highlight=False)
    seg = result["segmentation"]
    if seg.get("pixels"):
        _seg_table(result, seg, console)
    else:
        console.print("segmentation: no labels in this dataset")
    if result["depth"]:
        _depth_table(result, console)
        _depth_by_class_table(result, console)
    else:
        console.print("depth: no depth ground truth or no depth head")


@dataclass
class EvalConfig:
    """What `eval` scores: a checkpoint (None: the bundled weights) on a dataset spec."""

    data: str = setting(required=True, help="synthetic[:seed=N,n=N,size=HxW] | camvid:ROOT[,split=val] | kitti:ROOT | "
                                      "kitti_stereo:ROOT[,split=train|test] | cityscapes:ROOT | npy:ROOT")
    weights: str | None = setting(None, help="checkpoint", default_text="the bundled weights")
    split: str = setting("val", help="dataset split, where the spec names none")
    input_size: tuple[int, int] | None = setting(None, size=MAX_SIDE, metavar="HxW", default_text="the checkpoint's",
                                                 help="model input box")
    max_depth: float = setting(80.0, low=0.0, low_open=True, help="ignore ground truth beyond this")
    limit: int | None = setting(None, low=1, help="evaluate only the first N images")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N")
    precision: str = setting("fp32", choices=PRECISION_CHOICES, help="compute precision")
    backend: str = setting("auto", choices=BACKENDS, help="auto: OpenVINO on the CPU, torch on CUDA, TensorRT for "
                           "an .engine")
    workers: int = setting(0, low=0, high=64, help="data loader processes")
    json: str | None = setting(None, metavar="PATH", optional_value="-",
                               help="write JSON to PATH (or stdout with -); per_image holds each image's own figures")
    overwrite: bool = setting(False, help="replace outputs that already exist (an input is never written)")
    save: str | None = setting(None, metavar="DIR", help="write a picture per image scored into DIR (a new or empty "
                               "folder): image, ground truth, prediction and error side by side")


def _check_ground_truth(spec: str, data) -> None:
    """An evaluation that can score nothing is an error, before any work; images without ground truth are named."""
    from ..data.video import VideoTriplets
    from ..errors import UserError

    if isinstance(data, VideoTriplets):
        raise UserError(f"'{spec}' is video for training (frame triplets, no ground truth); eval needs labels or depth")
    missing = data.without_ground_truth() if hasattr(data, "without_ground_truth") else []
    if not missing:
        return
    few = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    if len(missing) >= len(data):
        raise UserError(f"no image of '{spec}' has ground truth (labels or depth) to score: {few} have none "
                        "(are the label files named like the images?)")
    logging.getLogger(__name__).warning("%d of %d images of '%s' have no ground truth and are not scored: %s",
                                        len(missing), len(data), spec, few)


def _save_dir(cfg: "EvalConfig", data, weights: str):
    """The --save folder, made before any work; a picture already there is never replaced."""
    from pathlib import Path

    from ..errors import UserError
    from ..runtime.paths import check_new, check_outputs, no_stdout

    from ..data.registry import split_spec

    no_stdout(cfg.save, "the --save pictures (one file per image)")
    folder = Path(cfg.save)
    _, data_path, _ = split_spec(cfg.data)
    check_outputs([("weights", weights), *([("dataset", data_path)] if data_path else [])],
                  [("--save folder", folder)])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --save folder '{folder}': {e.strerror or e}") from None
    n = len(data) if cfg.limit is None else min(cfg.limit, len(data))
    if n:  # names are known only once each image is read: a folder holding anything is refused
        check_new([("--save folder", folder)], cfg.overwrite)
    return folder


def run_eval(cfg: EvalConfig) -> int:
    from ..data.registry import open_dataset, split_spec
    from ..evaluation.evaluate import evaluate
    from ..runtime.backends import open_network
    from ..runtime.bundled import default_weights
    from ..runtime.device import resolve_device
    from ..runtime.paths import check_json_output, write_json

    check_config(cfg)

    device = resolve_device(cfg.device)
    weights = cfg.weights or str(default_weights())
    if cfg.json and cfg.json != "-":  # before minutes of work, not after
        _, data_path, _ = split_spec(cfg.data)
        given = [("weights", weights), *([("dataset", data_path)] if data_path else [])]
        check_json_output(cfg.json, "results JSON", given, overwrite=cfg.overwrite)
    data = open_dataset(cfg.data, cfg.split, default_length=200, default_seed=7)
    _check_ground_truth(cfg.data, data)
    save_dir = _save_dir(cfg, data, weights) if cfg.save else None
    network = open_network(weights, cfg.backend, device, cfg.precision, cfg.input_size)
    logging.getLogger(__name__).info(network.describe())  # which backend and precision, and why
    result = evaluate(network, data, input_box=cfg.input_size, max_depth=cfg.max_depth, limit=cfg.limit,
                      workers=cfg.workers, save_dir=save_dir)
    result["weights"] = weights
    result["backend"] = network.name
    result["precision"] = network.precision
    result["data"] = cfg.data
    code = 0
    if result["interrupted"]:  # Ctrl-C: what was scored is kept, and labelled as partial
        logging.getLogger(__name__).warning("interrupted after %d of %d images: the figures cover those only",
                                            result["images"], result["of"])
        code = 130
    if cfg.json == "-":
        print(json.dumps(result, indent=2, default=float))
        return code
    print_report(result, Console())  # first: the figures are on screen even if the file cannot be written
    if cfg.json:
        write_json(cfg.json, result, "results JSON", default=float)
    return code
