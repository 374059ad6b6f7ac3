"""Dataset specs used by `train` and `eval`: synthetic[:...], cityscapes:ROOT, npy:ROOT."""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from ..errors import UserError
from ..synthetic.seeds import HELD_OUT_SEED, SEED_STRIDE, TRAIN_SEED  # noqa: F401  (HELD_OUT_SEED: for users)


@dataclass
class SyntheticSet(Dataset):
    """``length`` independent scenes of the procedural world (rendered on the fly)."""

    length: int = 100_000
    seed: int = TRAIN_SEED
    height: int = 256
    width: int = 512

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):  # -> datasets.Sample
        from ..synthetic import render_sample
        from .datasets import Sample

        if not 0 <= index < self.length:
            raise IndexError(index)
        f = render_sample(self.seed * SEED_STRIDE + index, self.height, self.width)
        return Sample(image=f.image, labels=f.labels, depth=f.depth, name=f"synthetic-{self.seed}-{index}")


# Options any dataset spec may carry for training: how often it is drawn and how it is cropped.
MIX_OPTIONS = ("weight", "crop", "scale", "sky", "popup")


# options whose value is itself a comma-separated list (video:...,intrinsics=fx,fy,cx,cy)
LIST_OPTIONS = ("intrinsics",)


def split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """'kind:PATH,key=value,...' -> (kind, PATH or '', options). A synthetic spec has no path."""
    kind, _, rest = spec.partition(":")
    path_parts, opts, last = [], {}, None
    for part in filter(None, (p.strip() for p in rest.split(","))):
        if "=" in part:
            k, v = part.split("=", 1)
            last = k.strip()
            opts[last] = v.strip()
        elif last in LIST_OPTIONS:
            opts[last] += "," + part
        elif opts:
            raise UserError(f"dataset option '{part}' is not key=value")
        else:
            path_parts.append(part)
    return kind.strip(), ",".join(path_parts), opts


def _check_options(kind: str, opts: dict[str, str], allowed: set[str]) -> None:
    unknown = set(opts) - allowed - set(MIX_OPTIONS)
    if unknown:
        raise UserError(f"unknown {kind} dataset option(s): {', '.join(sorted(unknown))}")


SPECS = ("synthetic[:seed=N,n=N,size=HxW]", "camvid:ROOT[,split=train|val|test]", "kitti:ROOT",
         "kitti_stereo:ROOT[,split=train|test]", "cityscapes:ROOT[,split=...]", "npy:ROOT[,split=...]",
         "video:CLIP|FOLDER[,stride=N,size=HxW,crop=T:B:L:R,fov=DEG|intrinsics=fx,fy,cx,cy] (train only)")


def open_dataset(spec: str, split: str = "train", default_length: int = 100_000,
                 default_seed: int = TRAIN_SEED) -> Dataset:
    """One of :data:`SPECS`; ``split`` is used when the spec names none. Mixing options are ignored here."""
    kind, path, opts = split_spec(spec)
    if kind == "synthetic":
        from ..runtime.sizes import parse_size

        if path:
            raise UserError(f"synthetic dataset takes options only, not '{path}'")
        _check_options(kind, opts, {"seed", "n", "size"})
        h, w = parse_size(opts.get("size", "256x512"), what="synthetic dataset size")
        try:
            return SyntheticSet(int(opts.get("n", default_length)), int(opts.get("seed", default_seed)), h, w)
        except ValueError as e:
            raise UserError(f"bad synthetic dataset option: {e}") from None
    if kind == "kitti_stereo" and path:
        from .kitti_stereo import KittiStereoDataset

        _check_options(kind, opts, {"split"})
        return KittiStereoDataset(path, split=opts.get("split"))
    if kind == "video" and path:
        from .video import OPTIONS, ClipOptions, VideoTriplets

        _check_options(kind, opts, set(OPTIONS))
        return VideoTriplets(path, ClipOptions.parse(opts, spec))
    if kind in ("cityscapes", "npy", "camvid", "kitti") and path:
        from . import datasets

        if kind == "kitti":
            _check_options(kind, opts, set())
            return datasets.KittiDepthDataset(path)
        _check_options(kind, opts, {"split"})
        split = opts.get("split", split)
        cls = {"cityscapes": datasets.CityscapesDataset, "npy": datasets.NpySegformer3DDataset,
               "camvid": datasets.CamVidDataset}[kind]
        return cls(path, split=split)
    raise UserError(f"unknown dataset '{spec}'; use {', '.join(SPECS)}")
