"""`train`'s one typed config: every setting, its default and its bounds."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .losses import DEPTH_LOSSES

FREEZABLE = ("encoder", "seg_head", "depth_head")
# bounds of user-sized requests, checked before any work (a typo costs one line, not an allocation failure)
MAX_BATCH = 256
MAX_STEPS = 10_000_000
MAX_WORKERS = 64


@dataclass
class TrainConfig:
    data: tuple[str, ...] = ("synthetic",)  # dataset specs; several are mixed by their weight= option
    split: str = "train"
    out: str = "runs/train"
    variant: str = "b0"
    num_classes: int = 19
    decoder_dim: int | None = None
    crop: tuple[int, int] = (256, 512)  # H x W of training crops
    scale: tuple[float, float] = (0.5, 2.0)  # random zoom range before cropping
    input_size: tuple[int, int] | None = None  # recommended inference input stored in the metadata (default: crop)
    threads: int | None = None  # torch CPU threads
    steps: int = 10_000
    batch_size: int = 8
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup: int = 200
    poly_power: float = 1.0
    seg_weight: float = 1.0
    depth_weight: float = 1.0
    depth_loss: str = "log-l1"
    silog_lambda: float = 0.85
    photometric_weight: float = 1.0  # video sources: the self-supervised loss's weight beside the others
    smoothness: float = 1e-3  # video sources: edge-aware smoothness of inverse depth (Monodepth2's weight)
    pose_warmup: int = 200  # video sources: steps in which the photometric loss trains the pose network only
    pose_lr: float = 1e-3  # video sources: the pose network's peak learning rate (it starts from nothing)
    freeze: tuple[str, ...] = ()  # "encoder", "seg_head", "depth_head"
    init: str | None = None  # MiT ImageNet file (encoder) or any full checkpoint
    resume: str | None = None  # a run directory or its last.state.pt
    seed: int = 0
    workers: int = 1
    amp: bool = True  # mixed precision on CUDA
    device: str = "auto"
    save_every: int = 1000
    log_every: int = 20
    augment: bool = True
    progress: str = "auto"
    balance: float = 0.5  # label weights (median frequency / frequency) ** balance where a dataset counts them
    sky_depth: float = 100.0  # depth target (m) of sky-labelled pixels without depth: sky is far, never near; 0 = off

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = (self.data,)
        self.check()

    def check(self) -> None:
        """Every bound, before any work: one line naming the setting."""
        def bounded(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
            if not (lo < value if lo_open else lo <= value) or value > hi:
                low = f"> {lo:g}" if lo_open else f">= {lo:g}"
                raise UserError(f"{name} must be {low} and <= {hi:g}, not {value:g}")

        if not self.data:
            raise UserError("data: give at least one dataset")
        bounded("steps", self.steps, 1, MAX_STEPS)
        bounded("batch_size", self.batch_size, 1, MAX_BATCH)
        bounded("lr", self.lr, 0.0, 1.0, lo_open=True)
        bounded("pose_lr", self.pose_lr, 0.0, 1.0, lo_open=True)
        bounded("weight_decay", self.weight_decay, 0.0, 1.0)
        bounded("warmup", self.warmup, 0, MAX_STEPS)
        bounded("pose_warmup", self.pose_warmup, 0, MAX_STEPS)
        bounded("poly_power", self.poly_power, 0.0, 10.0)
        for name in ("seg_weight", "depth_weight", "photometric_weight", "smoothness", "balance", "sky_depth"):
            bounded(name, getattr(self, name), 0.0, 1000.0)
        bounded("silog_lambda", self.silog_lambda, 0.0, 1.0)
        bounded("workers", self.workers, 0, MAX_WORKERS)
        bounded("save_every", self.save_every, 1, MAX_STEPS)
        bounded("log_every", self.log_every, 1, MAX_STEPS)
        if self.threads is not None:
            bounded("threads", self.threads, 1, 1024)
        if self.depth_loss not in DEPTH_LOSSES:
            raise UserError(f"unknown depth loss '{self.depth_loss}'; choose one of {', '.join(DEPTH_LOSSES)}")
        for part in self.freeze:
            if part not in FREEZABLE:
                raise UserError(f"cannot freeze '{part}'; choose from {', '.join(FREEZABLE)}")
