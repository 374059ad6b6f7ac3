"""The training data: each ``--data`` spec as a :class:`Source`, drawn by weight into mixed batches.

Two kinds of source: labelled frames (segmentation labels and/or depth; :class:`TrainSet`) and video
(:class:`VideoTrainSet`: frame triplets for the photometric loss). Every sample's randomness comes from
(seed, index) only, so results do not depend on the number of data workers, and :func:`sampling_plan` makes a
resumed run continue exactly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .config import TrainConfig

log = logging.getLogger(__name__)


class TrainSet(Dataset):
    """A dataset of Samples -> augmented, normalised tensors ("frames", image, labels, depth)."""

    kind = "frames"

    def __init__(self, base: Dataset, crop: tuple[int, int], seed: int, augment: bool,
                 mean: tuple[float, ...], std: tuple[float, ...],
                 scale: tuple[float, float] = (0.5, 2.0), sky_labels: tuple[int, ...] = (),
                 sky_depth: float = 0.0,
                 popup: tuple[float | dict[str, float], np.ndarray, np.ndarray] | None = None) -> None:
        """popup: (horizon, or one per sequence; ground, sky per label id) to make relative depth from the
        labels (data/popup.py)."""
        from ..data.augment import Augment

        self.base, self.seed, self.mean, self.std = base, seed, mean, std
        self.sky_labels, self.sky_depth = sky_labels, sky_depth
        self.popup = popup
        self.augment = Augment(out_size=crop, scale=scale) if augment else Augment(
            out_size=crop, scale=(1.0, 1.0), flip=False, color_jitter=False, blur=False, noise=False)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        from ..data.augment import to_tensors

        rng = np.random.default_rng([self.seed, index])
        sample = self.base[index]
        if self.popup is not None and sample.labels is not None and sample.depth is None:
            from ..data.popup import popup_depth, sequence_of

            # on the whole frame, before zoom and crop: the horizon is a row of the camera's own picture
            horizon, ground, sky = self.popup
            if isinstance(horizon, dict):  # popup=auto: per sequence; one without enough ground: no target
                horizon = horizon.get(sequence_of(sample.name))
            if horizon is not None:
                sample = replace(sample, depth=popup_depth(sample.labels, ground, sky, horizon))
        sample = self.augment(sample, rng)
        image, labels, depth = to_tensors(sample, self.mean, self.std)
        if self.sky_depth > 0 and self.sky_labels and self.popup is None:  # metres mean nothing in relative depth
            sky = torch.isin(labels, torch.tensor(self.sky_labels)) & (depth[0] <= 0)
            depth[0][sky] = self.sky_depth
        return image, labels, depth


class VideoTrainSet(Dataset):
    """Frame triplets -> (clean 3 x 3 x H x W in [0, 1] for the loss, network inputs 3 x 3 x H x W normalised
    and colour-jittered alike, K 3 x 3). Augmentation: a horizontal flip of all three frames (and of K), one
    colour jitter for all three; geometry is never zoomed or cropped, so K stays exact."""

    kind = "video"

    def __init__(self, base: Dataset, seed: int, augment: bool, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        from ..data.augment import Augment

        self.base, self.seed, self.augment, self.mean, self.std = base, seed, augment, mean, std
        self.jitter = Augment(out_size=(1, 1))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        from ..runtime.normalize import normalize

        rng = np.random.default_rng([self.seed, index])
        frames, K = self.base[index]
        K = K.copy()
        if self.augment and rng.random() < 0.5:
            frames = np.ascontiguousarray(frames[:, :, ::-1])
            K[0, 2] = frames.shape[2] - K[0, 2]  # continuous coordinates: x -> W - x
        inputs = frames
        if self.augment and rng.random() < self.jitter.jitter_prob:
            seed = int(rng.integers(2 ** 32))  # the same draw for the three frames: one colour change
            inputs = np.stack([self.jitter._jitter(f, np.random.default_rng(seed)) for f in frames])
        clean = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        net = clean if inputs is frames else torch.from_numpy(inputs).permute(0, 3, 1, 2).float().div_(255.0)
        return clean, normalize(net, self.mean, self.std), torch.from_numpy(K)


@dataclass
class Source:
    """One training dataset of a mix: its spec, sampling weight and, for labelled frames, its label-set table."""

    spec: str
    data: TrainSet | VideoTrainSet
    weight: float
    membership: torch.Tensor | None = None  # L x K bool, None: labels are the model's own classes
    label_weights: torch.Tensor | None = None  # L weights, rare labels up
    relative_depth: bool = False  # depth known up to a scale per image (pop-up): scored scale-invariantly

    @property
    def kind(self) -> str:
        return self.data.kind


def balanced_weights(counts: np.ndarray, power: float) -> torch.Tensor | None:
    """(median frequency / frequency) ** power, clipped to [0.1, 10]: rare classes weigh more, mIoU rises."""
    if power <= 0 or counts.sum() == 0:
        return None
    freq = counts / counts.sum()
    present = freq > 0
    w = np.ones_like(freq)
    w[present] = np.clip((np.median(freq[present]) / freq[present]) ** power, 0.1, 10.0)
    return torch.from_numpy(w.astype(np.float32))


class MixedSet(Dataset):
    """Index (source, sample) -> (source, *that source's tensors)."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return sum(len(s.data) for s in self.sources)

    def __getitem__(self, index: tuple[int, int]):
        src, i = index
        return (src, *self.sources[src].data[i])


@dataclass
class Group:
    """Samples of one batch that share a forward pass: one labelled source, or video triplets of one size."""

    sources: tuple[int, ...]  # the source of each sample
    tensors: tuple[torch.Tensor, ...]

    @property
    def size(self) -> int:
        return len(self.sources)


def collate_groups(kinds: list[str]):
    """A collate function: labelled sources get a group each (their label tables differ); video triplets of
    all sources group by frame size (their loss is the same)."""
    def collate(items: list) -> list[Group]:
        groups: dict[object, list] = {}
        for src, *tensors in items:
            key = ("video", tuple(tensors[0].shape)) if kinds[src] == "video" else src
            groups.setdefault(key, []).append((src, tensors))
        out = []
        for key in sorted(groups, key=str):
            members = groups[key]
            out.append(Group(tuple(s for s, _ in members), tuple(torch.stack(t) for t in zip(*(m for _, m in members)))))
        return out
    return collate


def sampling_plan(sizes: list[int], weights: list[float], steps: int, batch_size: int,
                  seed: int) -> list[list[tuple[int, int]]]:
    """Per step, batch_size (source, index) pairs: the source drawn by weight, each source walking through
    its own reshuffled epochs. Step t depends only on (seed, t) and the steps before it, not on ``steps``,
    so a resumed run continues exactly."""
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    pos = [0] * len(sizes)
    perms: list[np.ndarray | None] = [None] * len(sizes)
    plan = []
    for t in range(steps):
        draws = np.random.default_rng([seed, 1, t]).choice(len(sizes), size=batch_size, p=p)
        batch = []
        for src in draws.tolist():
            epoch, k = divmod(pos[src], sizes[src])
            if k == 0 or perms[src] is None:
                perms[src] = np.random.default_rng([seed, 2, src, epoch]).permutation(sizes[src])
            batch.append((src, int(perms[src][k])))
            pos[src] += 1
        plan.append(batch)
    return plan


def _parse_mix(spec: str, cfg: TrainConfig
               ) -> tuple[float, tuple[int, int], tuple[float, float], float, float | str | None]:
    """weight=, crop=, scale=, sky= and popup= of one --data spec (defaults: 1, --crop, --scale, --sky-depth,
    no pop-up depth)."""
    from ..data.registry import split_spec
    from ..runtime.sizes import parse_range, parse_size

    _, _, opts = split_spec(spec)

    def number(key: str, default: float) -> float:
        return _number(spec, opts, key, default)

    weight = _weight(spec, opts)
    sky = number("sky", cfg.sky_depth)
    if sky < 0:
        raise UserError(f"'{spec}': sky= must be >= 0 (metres; 0 = no sky depth target)")
    popup: float | str | None = None
    if opts.get("popup") == "auto":
        popup = "auto"
    elif "popup" in opts:
        popup = number("popup", -1.0)
        if not 0.0 <= popup < 1.0:
            raise UserError(f"'{spec}': popup= is the horizon's row as a fraction of the frame height, 0 to 1 "
                            f"(0.5 for a level camera), or auto (per sequence, from the labels), not {opts['popup']}")
    crop = parse_size(opts["crop"]) if "crop" in opts else tuple(cfg.crop)
    scale = parse_range(opts["scale"], "-", f"'{spec}': scale=") if "scale" in opts else tuple(cfg.scale)
    return weight, crop, scale, sky, popup


def _number(spec: str, opts: dict[str, str], key: str, default: float) -> float:
    try:
        return float(opts.get(key, default))
    except ValueError:
        raise UserError(f"'{spec}': {key}= wants a number, not '{opts[key]}'") from None


def _weight(spec: str, opts: dict[str, str]) -> float:
    weight = _number(spec, opts, "weight", 1.0)
    if not 0 < weight < float("inf"):
        raise UserError(f"'{spec}': weight= must be > 0")
    return weight


def _horizons(spec: str, base: Dataset, ground: np.ndarray) -> dict[str, float]:
    """popup=auto: the horizon of each sequence of ``base``, estimated once from all its label maps."""
    from ..data.popup import estimate_horizons

    frames = ((s.name, s.labels) for s in (base[i] for i in range(len(base))) if s.labels is not None)
    found = estimate_horizons(frames, ground)
    if not found:
        raise UserError(f"'{spec}': popup=auto found too little ground in the labels to place a horizon; "
                        "give popup=H (the horizon's row as a fraction of the frame height)")
    log.info("pop-up horizons of %s: %s", spec, ", ".join(f"{k or '(all)'} {v:.3f}" for k, v in found.items()))
    return found


def _video_source(spec: str, i: int, cfg: TrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> Source:
    from ..data.registry import open_dataset, split_spec

    _, _, opts = split_spec(spec)
    frames_only = {"scale", "sky", "popup"} & set(opts)
    if frames_only:
        raise UserError(f"'{spec}': {', '.join(sorted(frames_only))}= is for labelled frames, not video")
    weight = _weight(spec, opts)
    base = open_dataset(spec, cfg.split)
    return Source(spec, VideoTrainSet(base, cfg.seed + 1000 * i, cfg.augment, mean, std), weight)


def build_sources(cfg: TrainConfig, class_names: tuple[str, ...], mean: tuple[float, ...],
                  std: tuple[float, ...]) -> list[Source]:
    from ..data.registry import open_dataset, split_spec
    from ..labels import SKY, identity_space

    sources = []
    for i, spec in enumerate(cfg.data):
        if split_spec(spec)[0] == "video":
            sources.append(_video_source(spec, i, cfg, mean, std))
            continue
        weight, crop, scale, sky_depth, popup = _parse_mix(spec, cfg)
        # the synthetic world is rendered on demand: a fixed, large length keeps the sample order
        # independent of --steps, which is what makes --resume continue exactly
        base = open_dataset(spec, cfg.split, default_length=1_000_000, default_seed=cfg.seed)
        if len(base) == 0:
            raise UserError(f"dataset '{spec}' is empty")
        space = getattr(base, "label_space", None)
        membership = None  # None: labels are the model's classes, plain cross-entropy
        if space is not None:
            try:
                membership = torch.from_numpy(space.membership(class_names))
            except ValueError as e:
                raise UserError(f"cannot train on '{spec}': {e}") from None
        label_meaning = space or identity_space(class_names)
        sky = tuple(j for j, m in enumerate(label_meaning.members) if m == (SKY,))
        kinds = None
        if popup is not None:
            from ..data.popup import label_kinds

            if base[0].depth is not None:  # one sample says it: pop-up depth would be ignored beside real depth
                raise UserError(f"'{spec}': popup= is for labelled data without depth; this dataset has its own")
            ground, sky_ids = label_kinds(label_meaning)
            kinds = (_horizons(spec, base, ground) if popup == "auto" else popup, ground, sky_ids)
        data = TrainSet(base, crop, cfg.seed + 1000 * i, cfg.augment, mean, std, scale, sky, sky_depth, kinds)
        counts = base.label_histogram() if hasattr(base, "label_histogram") else None
        label_weights = None if counts is None else balanced_weights(counts, cfg.balance)
        sources.append(Source(spec, data, weight, membership, label_weights, relative_depth=popup is not None))
    return sources
