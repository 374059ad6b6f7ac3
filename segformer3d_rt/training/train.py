"""`segformer3d-rt train`: both heads (or either), AdamW with warm-up + poly, checkpoints with metadata."""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..model import SegFormer3D, build_model, load_encoder, read_checkpoint, save_checkpoint
from ..model.checkpoints import load_state_strict
from ..model.metadata import IMAGENET_MEAN, IMAGENET_STD
from ..runtime.stop import StopRequest
from .losses import DEPTH_LOSSES, depth_loss, scale_invariant_loss, set_loss

log = logging.getLogger(__name__)


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainSet(Dataset):
    """A dataset of Samples -> augmented, normalised tensors; randomness from (seed, index) only,
    so results do not depend on the number of workers."""

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


@dataclass
class Source:
    """One training dataset of a mix: its spec, sampling weight, crop and label-set table."""

    spec: str
    data: TrainSet
    weight: float
    membership: torch.Tensor | None  # L x K bool, None: labels are the model's own classes
    label_weights: torch.Tensor | None = None  # L weights, rare labels up
    relative_depth: bool = False  # depth known up to a scale per image (pop-up): scored scale-invariantly


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
    """Index (source, sample) -> (source, image, labels, depth)."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return sum(len(s.data) for s in self.sources)

    def __getitem__(self, index: tuple[int, int]):
        src, i = index
        return (src, *self.sources[src].data[i])


def _collate_groups(items: list) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One group per source: sources may differ in crop size, so each gets its own forward pass."""
    groups: dict[int, list] = {}
    for src, image, labels, depth in items:
        groups.setdefault(src, []).append((image, labels, depth))
    return [(src, *(torch.stack(t) for t in zip(*g))) for src, g in sorted(groups.items())]


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
        try:
            return float(opts.get(key, default))
        except ValueError:
            raise UserError(f"'{spec}': {key}= wants a number, not '{opts[key]}'") from None

    weight = number("weight", 1.0)
    if not weight > 0:
        raise UserError(f"'{spec}': weight= must be > 0")
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


def build_sources(cfg: TrainConfig, class_names: tuple[str, ...], mean: tuple[float, ...],
                  std: tuple[float, ...]) -> list[Source]:
    from ..data.registry import open_dataset
    from ..labels import SKY, identity_space

    sources = []
    for i, spec in enumerate(cfg.data):
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


def _set_frozen(model: SegFormer3D, freeze: tuple[str, ...]) -> None:
    for name in freeze:
        module = getattr(model, name, None)
        if module is None:
            raise UserError(f"cannot freeze '{name}': the model has no such part")
        for p in module.parameters():
            p.requires_grad_(False)


def _train_mode(model: SegFormer3D, freeze: tuple[str, ...]) -> None:
    """train() everywhere except frozen parts: their BatchNorm statistics and drop-path stay fixed."""
    model.train()
    for name in freeze:
        getattr(model, name).eval()


def _schedule(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return max(0.0, 1.0 - progress) ** cfg.poly_power
    return factor


def _description(cfg: TrainConfig) -> str:
    return f"segformer3d-rt train --data {' --data '.join(cfg.data)} --steps {cfg.steps} --seed {cfg.seed}"


def build_training_model(cfg: TrainConfig) -> tuple[SegFormer3D, str]:
    """Fresh model, initialised from a MiT file (encoder) or any full checkpoint when asked."""
    if cfg.init:
        ckpt = read_checkpoint(cfg.init)
        if not ckpt.encoder_only:
            model = SegFormer3D(ckpt.meta if ckpt.meta.depth is not None else
                                replace(ckpt.meta, depth=build_model("b0").meta.depth))
            own = model.state_dict()
            sd = dict(ckpt.state_dict)
            for k in own:  # a segmentation-only checkpoint starts a fresh depth head
                if k.startswith("depth_head.") and k not in sd:
                    sd[k] = own[k]
            load_state_strict(model, sd, f"'{cfg.init}' ({ckpt.format})")
            # classes, palette, normalisation and depth units come from the checkpoint; the recommended input
            # size and the description are this run's
            model.meta = replace(model.meta, input_size=tuple(cfg.input_size or model.meta.input_size),
                                 source_format="segformer3d-rt", description=_description(cfg))
            return model, f"all weights from {cfg.init} ({ckpt.format})"
    try:
        model = build_model(cfg.variant, num_classes=cfg.num_classes, depth=True, decoder_dim=cfg.decoder_dim)
    except ValueError as e:
        raise UserError(str(e)) from None
    model.meta = replace(model.meta, input_size=tuple(cfg.input_size or cfg.crop), source_format="segformer3d-rt",
                         description=_description(cfg))
    if cfg.init:
        fmt = load_encoder(model, cfg.init)
        return model, f"encoder from {cfg.init} ({fmt})"
    return model, "random initialisation"


def _resume_path(resume: str) -> Path:
    p = Path(resume)
    if p.is_dir():
        p = p / "last.state.pt"
    if not p.is_file():
        raise UserError(f"cannot resume: '{p}' not found")
    return p


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the path of the final checkpoint."""
    from ..runtime.device import resolve_device

    if cfg.depth_loss not in DEPTH_LOSSES:
        raise UserError(f"unknown depth loss '{cfg.depth_loss}'; choose one of {', '.join(DEPTH_LOSSES)}")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    model, init_note = build_training_model(cfg)
    model.to(device)
    _set_frozen(model, cfg.freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("everything is frozen: nothing to train")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    out = Path(cfg.out)
    _check_out(out, cfg.resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory '{out}': {e.strerror}") from None
    if cfg.resume:
        # onto the CPU: torch.set_rng_state takes only a CPU ByteTensor (map_location=cuda would move it there);
        # load_state_dict copies weights and optimizer state onto the parameters' device itself
        state = torch.load(_resume_path(cfg.resume), map_location="cpu", weights_only=True)
        load_state_strict(model, state["model"], f"resume state '{cfg.resume}'")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        log.info("resumed at step %d", start)

    mean, std = model.meta.mean, model.meta.std
    if model.meta.mean != IMAGENET_MEAN or model.meta.std != IMAGENET_STD:
        log.info("normalising with the checkpoint's mean %s / std %s", mean, std)
    sources = build_sources(cfg, model.meta.class_names, mean, std)
    for src in sources:
        log.info("data %s: %d samples, weight %.2f, crop %dx%d%s", src.spec, len(src.data), src.weight,
                 *src.data.augment.out_size, "" if src.label_weights is None else
                 ", label weights " + " ".join(f"{w:.2f}" for w in src.label_weights.tolist()))
    plan = sampling_plan([len(s.data) for s in sources], [s.weight for s in sources], cfg.steps,
                         cfg.batch_size, cfg.seed)[start:]
    loader = DataLoader(MixedSet(sources), batch_sampler=plan, num_workers=cfg.workers,
                        collate_fn=_collate_groups, persistent_workers=False, pin_memory=device.type == "cuda")
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), "init_note": init_note}, indent=2))

    reporter = _Reporter(cfg, start)
    _train_mode(model, cfg.freeze)
    step = start
    batches = iter(loader)  # creating the iterator draws from torch's RNG: restore the state after it
    if cfg.resume:
        torch.set_rng_state(state["torch_rng"])
    with reporter, StopRequest() as stop:
        for groups in batches:
            ls_sum, ld_sum, n_all = _step(model, opt, sched, scaler, groups, sources, cfg, device, use_amp)
            step += 1
            reporter.step(step, ls_sum, ld_sum, opt.param_groups[0]["lr"], n_all)
            if _save_due(step, cfg):
                _save(model, opt, sched, scaler, step, out)
                _train_mode(model, cfg.freeze)
            if stop.requested:
                break
    final = out / "last.safetensors"
    if step == start or (stop.requested and not _save_due(step, cfg)):
        _save(model, opt, sched, scaler, step, out)
    if stop.requested:
        log.warning("stopped at step %d of %d; %s holds it (--resume %s continues)", step, cfg.steps, final, out)
        raise KeyboardInterrupt
    return final


def _step(model: SegFormer3D, opt, sched, scaler, groups, sources: list[Source], cfg: TrainConfig,
          device: torch.device, use_amp: bool) -> tuple[float, float, int]:
    """One optimiser step on a batch split by dataset; returns its (seg, depth) losses and its image count."""
    loss, ls_sum, ld_sum, n_all = 0.0, 0.0, 0.0, sum(len(g[1]) for g in groups)
    for src, images, labels, depths in groups:
        images, labels, depths = images.to(device), labels.to(device), depths.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = model(images)
        ls = set_loss(outputs.seg_logits, labels, sources[src].membership, label_weights=sources[src].label_weights)
        if outputs.depth is None:
            ld = ls * 0.0
        elif sources[src].relative_depth:
            ld = scale_invariant_loss(outputs.depth, depths, model.meta.depth)
        else:
            ld = depth_loss(outputs.depth, depths, model.meta.depth, cfg.depth_loss, cfg.silog_lambda)
        share = len(images) / n_all  # each loss only where its labels exist, weighted by its samples
        loss = loss + share * (cfg.seg_weight * ls + cfg.depth_weight * ld)
        ls_sum, ld_sum = ls_sum + share * ls.item(), ld_sum + share * ld.item()
    if not torch.isfinite(loss):
        raise UserError(f"loss became {loss.item()} at step {sched.last_epoch}; lower --lr")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()  # per iteration, not per epoch
    return ls_sum, ld_sum, n_all


def _save_due(step: int, cfg: TrainConfig) -> bool:
    return step % cfg.save_every == 0 or step == cfg.steps


def _check_out(out: Path, resume: str | None) -> None:
    """Never train over a finished run: --out may hold one only when that is the run being resumed."""
    held = [n for n in ("last.safetensors", "last.state.pt") if (out / n).exists()]
    if not held:
        return
    if resume and _resume_path(resume).parent.resolve() == out.resolve():
        return
    raise UserError(f"'{out}' already holds a run ({held[0]}); give another --out, or --resume {out} to continue it")


def _save(model: SegFormer3D, opt, sched, scaler, step: int, out: Path) -> None:
    model.eval()
    save_checkpoint(model, out / "last.safetensors")
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": scaler.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
    tmp = out / "last.state.pt.partial"
    torch.save(state, tmp)
    tmp.replace(out / "last.state.pt")


class _Reporter:
    """rich progress with losses and rate on a terminal; a plain line every log_every steps otherwise."""

    def __init__(self, cfg: TrainConfig, start: int) -> None:
        from rich.console import Console

        self.cfg, self.start = cfg, start
        self.console = Console(stderr=True)
        mode = cfg.progress
        if mode == "auto":
            mode = "rich" if self.console.is_terminal else "plain"
        self.mode = mode
        self.t0 = time.perf_counter()
        self.images = 0
        self.avg: dict[str, float] = {}
        self.progress = None

    def __enter__(self) -> "_Reporter":
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console)
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.cfg.steps, completed=self.start, info="")
        return self

    def step(self, step: int, ls: float, ld: float, lr: float, n: int) -> None:
        self.images += n
        for k, v in (("seg", ls), ("depth", ld)):
            self.avg[k] = v if k not in self.avg else 0.95 * self.avg[k] + 0.05 * v
        rate = self.images / max(1e-9, time.perf_counter() - self.t0)
        info = f"seg {self.avg['seg']:.3f} depth {self.avg['depth']:.3f} lr {lr:.2e} {rate:.1f} img/s"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        elif self.mode == "plain" and (step % self.cfg.log_every == 0 or step == self.cfg.steps):
            print(f"step {step}/{self.cfg.steps} {info}", flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
