"""`eval`: load, evaluate, print a per-class table and depth metrics (or JSON)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


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

    data: str
    weights: str | None = None
    split: str = "val"
    input_size: tuple[int, int] | None = None  # model input box; None: the checkpoint's
    max_depth: float = 80.0  # ground truth beyond this is ignored
    limit: int | None = None  # only the first N images
    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 | bf16 | auto
    backend: str = "auto"  # auto | torch | openvino | onnxruntime | tensorrt (see runtime/backends)
    workers: int = 0
    json: str | None = None  # write JSON to this path, or to stdout with "-"
    save: str | None = None  # a picture per image scored (image, prediction, ground truth, error) in this folder


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
    from ..runtime.paths import check_outputs

    from ..data.registry import split_spec

    folder = Path(cfg.save)
    _, data_path, _ = split_spec(cfg.data)
    check_outputs([("weights", weights), *([("dataset", data_path)] if data_path else [])],
                  [("--save folder", folder)])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --save folder '{folder}': {e.strerror or e}") from None
    n = len(data) if cfg.limit is None else min(cfg.limit, len(data))
    if any(folder.iterdir()) and n:  # names are known only once each image is read: refuse any non-empty folder
        raise UserError(f"--save folder '{folder}' is not empty; give a new or empty folder (pictures already there "
                        "are never replaced)")
    return folder


def run_eval(cfg: EvalConfig) -> int:
    from ..data.registry import open_dataset, split_spec
    from ..evaluation.evaluate import evaluate
    from ..runtime.backends import Backend, open_network
    from ..runtime.bundled import default_weights
    from ..runtime.device import resolve_device, resolve_precision
    from ..runtime.paths import check_json_output, write_json

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    weights = cfg.weights or str(default_weights())
    if cfg.json and cfg.json != "-":  # before minutes of work, not after
        _, data_path, _ = split_spec(cfg.data)
        given = [("weights", weights), *([("dataset", data_path)] if data_path else [])]
        check_json_output(cfg.json, "results JSON", given)
    data = open_dataset(cfg.data, cfg.split, default_length=200, default_seed=7)
    _check_ground_truth(cfg.data, data)
    save_dir = _save_dir(cfg, data, weights) if cfg.save else None
    model = open_network(weights, cfg.backend, device, cfg.precision, cfg.input_size)
    if isinstance(model, Backend):  # compiled in its own precision (the log says which and why)
        precision = None
        logging.getLogger(__name__).info(model.describe())
    result = evaluate(model, data, device, input_box=cfg.input_size, max_depth=cfg.max_depth, limit=cfg.limit,
                      workers=cfg.workers, precision=precision, save_dir=save_dir)
    result["weights"] = weights
    result["backend"] = model.name if isinstance(model, Backend) else "torch"
    result["precision"] = model.precision if isinstance(model, Backend) else cfg.precision
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
