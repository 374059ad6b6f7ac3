"""Dataset specs used by `train` and `eval`: synthetic[:...], cityscapes:ROOT, npy:ROOT."""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from ..errors import UserError

# Sample seeds of one synthetic set are seed * STRIDE + index: sets with different seeds never share a scene.
SEED_STRIDE = 10_000_000
TRAIN_SEED = 0
HELD_OUT_SEED = 7  # the model card's held-out set; the training recipe never renders these scenes


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
        from .datasets import Sample
        from .synthetic import render_sample

        if not 0 <= index < self.length:
            raise IndexError(index)
        f = render_sample(self.seed * SEED_STRIDE + index, self.height, self.width)
        return Sample(image=f.image, labels=f.labels, depth=f.depth, name=f"synthetic-{self.seed}-{index}")


def _options(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise UserError(f"dataset option '{part}' is not key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def open_dataset(spec: str, split: str = "train", default_length: int = 100_000,
                 default_seed: int = TRAIN_SEED) -> Dataset:
    """synthetic[:seed=N,n=N,size=HxW] | cityscapes:ROOT | npy:ROOT (original Segformer3D layout)."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        from ..config import parse_size

        opts = _options(rest)
        unknown = set(opts) - {"seed", "n", "size"}
        if unknown:
            raise UserError(f"unknown synthetic dataset option(s): {', '.join(sorted(unknown))}")
        h, w = parse_size(opts.get("size", "256x512"))
        try:
            return SyntheticSet(int(opts.get("n", default_length)), int(opts.get("seed", default_seed)), h, w)
        except ValueError as e:
            raise UserError(f"bad synthetic dataset option: {e}") from None
    if kind == "cityscapes" and rest:
        from .datasets import CityscapesDataset

        return CityscapesDataset(rest, split=split)
    if kind == "npy" and rest:
        from .datasets import NpySegformer3DDataset

        return NpySegformer3DDataset(rest, split=split)
    raise UserError(f"unknown dataset '{spec}'; use synthetic[:seed=N,n=N,size=HxW], cityscapes:ROOT or npy:ROOT")
