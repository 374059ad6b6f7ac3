"""KITTI frames with dense stereo depth, in the layout they are often shared in (``kitti_stereo:PATH``):

    PATH/[train|test/]left/NAME.png        image (left colour camera; some are JPEG bytes under a .png name)
    PATH/[train|test/]gt_depth/NAME.png    uint16 depth, metres = value / 256, 0 = none   (optional)
    PATH/[train|test/]disparity/NAME.png   uint16 disparity, pixels = value / 256, 0 = none
    PATH/[train|test/]calib/NAME.txt       KITTI object-format calibration (P2, P3)

Depth is ``gt_depth`` where it exists, else fx * baseline / disparity from the calibration (fx = P2[0,0],
baseline = (P2[0,3] - P3[0,3]) / fx). ``PATH`` may be one such folder, or a folder of split folders (train/,
test/), all of them used unless ``split=`` names one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import UserError
from .datasets import Sample, _read_single_channel, read_kitti_depth_png, read_rgb


@dataclass(frozen=True)
class KittiCalib:
    """The left colour camera's intrinsics (pixels) and the stereo baseline (metres)."""

    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float


def read_calib(path: Path) -> KittiCalib:
    """P2 and P3 of a KITTI object-format calibration file."""
    rows: dict[str, np.ndarray] = {}
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read calibration '{path}': {e.strerror or e}") from None
    for line in text.splitlines():
        key, _, values = line.partition(":")
        if key.strip() in ("P2", "P3"):
            try:
                rows[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64).reshape(3, 4)
            except ValueError:
                raise UserError(f"calibration '{path}': {key.strip()} is not 12 numbers") from None
    if set(rows) != {"P2", "P3"}:
        raise UserError(f"calibration '{path}' lacks {' and '.join(sorted({'P2', 'P3'} - set(rows)))}")
    p2, p3 = rows["P2"], rows["P3"]
    fx = p2[0, 0]
    if not fx > 0:
        raise UserError(f"calibration '{path}': P2's focal length is {fx}, not positive")
    baseline = (p2[0, 3] - p3[0, 3]) / fx
    if not baseline > 0:
        raise UserError(f"calibration '{path}': P2 and P3 give a baseline of {baseline:.4f} m, not positive")
    return KittiCalib(fx, p2[1, 1], p2[0, 2], p2[1, 2], baseline)


def disparity_to_depth(raw: np.ndarray, calib: KittiCalib) -> np.ndarray:
    """KITTI disparity PNG values (pixels x 256, 0 = none) -> depth in metres (0 = none)."""
    disparity = raw.astype(np.float64) / 256.0
    valid = disparity > 0
    return np.where(valid, calib.fx * calib.baseline / np.where(valid, disparity, 1.0), 0.0).astype(np.float32)


SPLITS = ("train", "test")


class KittiStereoDataset(Dataset):
    """Frames of ``left/`` that have depth (``gt_depth/``, or ``disparity/`` with ``calib/``)."""

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(f"KITTI stereo folder '{self.root}' does not exist or is not a folder")
        if (self.root / "left").is_dir():
            if split is not None:
                raise UserError(f"'{self.root}' is one split folder (it holds left/): split= has nothing to pick")
            folders = [self.root]
        else:
            found = [s for s in SPLITS if (self.root / s / "left").is_dir()]
            if not found:
                raise UserError(f"'{self.root}' holds neither left/ nor {'/, '.join(SPLITS)}/ folders with left/ "
                                "(the kitti_stereo layout)")
            if split is not None and split not in SPLITS:
                raise UserError(f"unknown KITTI stereo split '{split}'; choose one of {', '.join(SPLITS)}")
            if split is not None and split not in found:
                raise UserError(f"'{self.root}' has no {split}/left folder")
            folders = [self.root / s for s in (found if split is None else [split])]
        self.items: list[tuple[Path, Path | None, Path | None, Path | None]] = []
        unmatched = []
        for folder in folders:
            for image in sorted((folder / "left").glob("*.png")):
                gt = folder / "gt_depth" / image.name
                disp = folder / "disparity" / image.name
                calib = folder / "calib" / f"{image.stem}.txt"
                if gt.is_file():
                    self.items.append((image, gt, None, None))
                elif disp.is_file() and calib.is_file():
                    self.items.append((image, None, disp, calib))
                else:
                    unmatched.append(image.name)
        if not self.items:
            raise UserError(f"no frame of '{self.root}' has depth (gt_depth/NAME.png, or disparity/NAME.png with "
                            f"calib/NAME.txt)" + (f"; frames without: {', '.join(unmatched[:3])}" if unmatched else ""))
        self._without_depth = unmatched

    def without_ground_truth(self) -> list[str]:
        """Frames of left/ without depth (left out of the dataset)."""
        return list(self._without_depth)

    def __len__(self) -> int:
        return len(self.items)

    def calib(self, index: int) -> KittiCalib | None:
        image, _, _, calib = self.items[index]
        path = calib or image.parent.parent / "calib" / f"{image.stem}.txt"
        return read_calib(path) if path.is_file() else None

    def __getitem__(self, index: int) -> Sample:
        image_path, gt, disp, calib = self.items[index]
        image = read_rgb(image_path)  # decoded from its bytes: a JPEG under a .png name reads as the JPEG it is
        if gt is not None:
            depth = read_kitti_depth_png(gt)
        else:
            depth = disparity_to_depth(_read_single_channel(disp, np.uint16), read_calib(calib))
        if depth.shape != image.shape[:2]:
            raise UserError(f"depth of '{image_path}' is {depth.shape[1]}x{depth.shape[0]}, the image is "
                            f"{image.shape[1]}x{image.shape[0]}")
        split = image_path.parent.parent.name if image_path.parent.parent != self.root else ""
        return Sample(image=image, labels=None, depth=depth, name=f"{split}/{image_path.stem}".lstrip("/"))
