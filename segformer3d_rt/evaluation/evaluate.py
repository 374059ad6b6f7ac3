"""`segformer3d-rt eval`: mIoU with a per-class table and depth metrics over valid pixels.

A dataset whose labels name sets of the model's classes (CamVid) is scored in its own label space: each
predicted class is mapped to the label whose set holds it. Depth is scored as predicted and, for models
whose metric scale may not fit the camera, after per-image median scaling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..pipeline.forward import Forward
from ..runtime.backends.base import Network
from ..runtime.sizes import model_input_size
from ..runtime.stop import StopRequest, loader_worker_exit


def _collate(samples: list) -> list:
    return samples


def _space_palette(space, meta) -> np.ndarray:
    """A colour per label of a grouped label space: its first member class's colour in the model's palette."""
    if space is None:
        return np.asarray(meta.palette, dtype=np.uint8)
    index = {n: k for k, n in enumerate(meta.class_names)}
    return np.asarray([meta.palette[index[m[0]]] for m in space.members], dtype=np.uint8)


@torch.inference_mode()
def evaluate(network: Network, data: Dataset, input_box: tuple[int, int] | None = None,
             max_depth: float | None = 80.0, batch_size: int = 4, workers: int = 0, limit: int | None = None,
             save_dir: Path | None = None) -> dict[str, Any]:
    """Predictions are resized to each label map's size (labels are never resized). Depth is also scored per
    predicted class (``depth_by_class``; the median scale is the whole image's). Ctrl-C or SIGTERM ends it after
    the image under way: the result covers ``images`` of ``of`` and has ``interrupted`` set. ``per_image``: each
    image's own figures. ``save_dir``: a picture per image there (``visualise.py``). The network computes in its
    own precision on its own device (``runtime/backends``)."""
    from .metrics import DepthMetrics, SegMetrics
    from .visualise import depth_grid, seg_grid, write_png

    meta = network.meta
    device = network.device
    forward = Forward(network)
    space = getattr(data, "label_space", None)
    lut = None
    if space is not None:
        try:
            lut = torch.from_numpy(space.group_lut(tuple(meta.class_names)).astype(np.int64)).to(device)
        except ValueError as e:
            from ..errors import UserError

            raise UserError(f"cannot score this model on {space.name}: {e}") from None
    class_names = list(space.names) if space is not None else list(meta.class_names)
    seg = SegMetrics(len(class_names))
    dep = DepthMetrics(max_depth=max_depth)
    dep_scaled = DepthMetrics(max_depth=max_depth)
    # depth error where the model sees each of its classes: the whole-set figure hides whether it is the road
    # or the trees that are wrong (on datasets without labels too: it is the *predicted* class)
    by_class = [(DepthMetrics(max_depth=max_depth), DepthMetrics(max_depth=max_depth)) for _ in meta.class_names]
    box = input_box or tuple(meta.input_size)
    n = len(data) if limit is None else min(limit, len(data))
    subset = torch.utils.data.Subset(data, range(n))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=_collate)

    per_image: list[dict[str, Any]] = []
    palette = _space_palette(space, meta)

    def score(sample) -> None:  # one image at a time through the network: sizes may differ
        h, w = sample.image.shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(sample.image))[None]
        decoded = forward(image, model_input_size((h, w), box), out_size=(h, w), depth_size=(h, w))
        pred = decoded.classes[0].long() if decoded.classes is not None else None
        record: dict[str, Any] = {"name": sample.name}
        picture = None
        if sample.labels is not None and pred is not None:
            grouped, labels = pred if lut is None else lut[pred], torch.from_numpy(sample.labels).to(device)
            seg.update(grouped, labels)
            known = labels != 255
            record["pixel_accuracy"] = float((grouped[known] == labels[known]).float().mean()) if known.any() else None
            if save_dir is not None:
                picture = seg_grid(sample.image, grouped.cpu().numpy().astype(np.uint8), sample.labels, palette)
        if sample.depth is not None and decoded.depth is not None:
            pred_d, gt = decoded.depth[0], torch.from_numpy(sample.depth).to(device)
            scale = median_scale(pred_d, gt, max_depth)  # one scale per image, over all its pixels
            scaled = pred_d * scale
            dep.update(pred_d, gt)
            dep_scaled.update(scaled, gt)
            own, own_scaled = DepthMetrics(max_depth=max_depth), DepthMetrics(max_depth=max_depth)
            own.update(pred_d, gt)
            own_scaled.update(scaled, gt)
            r, rs = own.compute(), own_scaled.compute()
            record["depth"] = {"pixels": r["count"], "abs_rel": r["abs_rel"], "delta1": r["delta1"],
                               "rmse": r["rmse"], "abs_rel_median_scaled": rs["abs_rel"],
                               "delta1_median_scaled": rs["delta1"], "median_scale": float(scale)}
            if save_dir is not None:  # depth says more than the labels where a frame has both
                gt_np = sample.depth.copy()
                if max_depth is not None:
                    gt_np[gt_np > max_depth] = 0
                picture = depth_grid(sample.image, pred_d.cpu().numpy(), gt_np, float(scale), rs["abs_rel"])
            if pred is not None:
                for k in pred.unique().tolist():
                    where = pred == k
                    by_class[k][0].update(pred_d[where], gt[where])
                    by_class[k][1].update(scaled[where], gt[where])
        if picture is not None:
            path = save_dir / picture_name(sample.name)
            write_png(path, picture)
            record["picture"] = str(path)
        per_image.append(record)

    count = 0
    with StopRequest(expected=loader_worker_exit) as stop:
        for sample in (s for batch in loader for s in batch):
            score(sample)
            count += 1
            if stop.requested:
                break
    # interrupted: the figures are over the images done (each one scored whole), and say so
    result: dict[str, Any] = {"images": count, "of": n, "interrupted": stop.requested, "classes": class_names,
                              "label_space": space.name if space is not None else "model"}
    s = seg.compute()
    result["segmentation"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()
                              if k != "confusion"}
    d = dep.compute()
    result["depth"] = d if d.get("count", d.get("valid_pixels", 0)) else None
    ds = dep_scaled.compute()
    result["depth_median_scaled"] = ds if result["depth"] else None
    per_class = {}
    for name, (raw_m, scaled_m) in zip(meta.class_names, by_class):
        r = raw_m.compute()
        if r["count"]:
            sc = scaled_m.compute()
            per_class[name] = {"count": r["count"], "abs_rel": r["abs_rel"], "delta1": r["delta1"],
                               "abs_rel_median_scaled": sc["abs_rel"], "delta1_median_scaled": sc["delta1"]}
    result["depth_by_class"] = per_class if result["depth"] else None
    result["per_image"] = per_image
    result["scored"] = {"segmentation": sum("pixel_accuracy" in r for r in per_image),
                        "depth": sum("depth" in r for r in per_image)}
    result["without_ground_truth"] = [r["name"] for r in per_image if "pixel_accuracy" not in r and "depth" not in r]
    result["depth_unit"] = meta.depth.unit if meta.depth else None
    result["max_depth"] = max_depth
    return result


def picture_name(name: str) -> str:
    """A sample's name as one file name (kitti_stereo names carry their split: 'test/000011')."""
    return name.replace("/", "_").replace("\\", "_") + ".png"


def median_scale(pred: torch.Tensor, gt: torch.Tensor, max_depth: float | None = None) -> torch.Tensor:
    """median(gt) / median(pred) over the pixels with valid ground truth (the usual scale alignment for
    monocular depth whose metric scale comes from another camera); 1 where no pixel is valid."""
    valid = torch.isfinite(gt) & (gt > 0)
    if max_depth is not None:
        valid &= gt <= max_depth
    if not valid.any():
        return torch.ones((), device=pred.device)
    return gt[valid].median() / pred[valid].median().clamp_min(1e-6)


def median_scaled(pred: torch.Tensor, gt: torch.Tensor, max_depth: float | None = None) -> torch.Tensor:
    """pred times :func:`median_scale`."""
    return pred * median_scale(pred, gt, max_depth)
