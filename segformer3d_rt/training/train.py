"""`segformer3d-rt train`: the loop. Both heads (or either) on a mix of sources (``mix.py``), AdamW with warm-up
+ poly, one optimiser step over a batch split by source (``_step``), checkpoints and resume (``run_state.py``).

Labelled frames train what their labels hold (segmentation, metric or pop-up depth); video triplets train depth
by the photometric loss (``photometric.py``) with a pose network beside the model.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..errors import UserError
from ..model import SegFormer3D, build_model, load_encoder, read_checkpoint
from ..model.checkpoints import load_state_strict
from ..model.metadata import IMAGENET_MEAN, IMAGENET_STD
from ..runtime.stop import StopRequest, loader_worker_exit
from . import run_state
from .config import TrainConfig
from .losses import depth_loss, scale_invariant_loss, set_loss
from .mix import Group, MixedSet, Source, build_sources, collate_groups, sampling_plan
from .report import Reporter

__all__ = ["TrainConfig", "build_training_model", "train"]

log = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _set_frozen(model: SegFormer3D, freeze: tuple[str, ...]) -> None:
    for name in freeze:
        module = getattr(model, name, None)
        if module is None:
            raise UserError(f"cannot freeze '{name}': the model has no such part")
        for p in module.parameters():
            p.requires_grad_(False)


def _train_mode(model: SegFormer3D, freeze: tuple[str, ...], pose: torch.nn.Module | None) -> None:
    """train() everywhere except frozen parts: their BatchNorm statistics and drop-path stay fixed."""
    model.train()
    for name in freeze:
        getattr(model, name).eval()
    if pose is not None:
        pose.train()


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


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the path of the final checkpoint."""
    from ..model.posenet import PoseNet
    from ..runtime.device import is_out_of_memory, resolve_device

    cfg.check()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    model, init_note = build_training_model(cfg)
    model.to(device)
    _set_frozen(model, cfg.freeze)
    out = Path(cfg.out)
    run_state.check_out(out, cfg.resume, cfg.overwrite)
    if cfg.resume:
        run_state.check_same_settings(asdict(cfg), cfg.resume)
    state = run_state.load_state(cfg.resume) if cfg.resume else None

    mean, std = model.meta.mean, model.meta.std
    if model.meta.mean != IMAGENET_MEAN or model.meta.std != IMAGENET_STD:
        log.info("normalising with the checkpoint's mean %s / std %s", mean, std)
    sources = build_sources(cfg, model.meta.class_names, mean, std)
    for src in sources:
        if src.kind == "video":
            log.info("data %s: %d triplets, weight %.2f", src.spec, len(src.data), src.weight)
        else:
            log.info("data %s: %d samples, weight %.2f, crop %dx%d%s", src.spec, len(src.data), src.weight,
                     *src.data.augment.out_size, "" if src.label_weights is None else
                     ", label weights " + " ".join(f"{w:.2f}" for w in src.label_weights.tolist()))
    video = any(s.kind == "video" for s in sources)
    if video and (model.depth_head is None or "depth_head" in cfg.freeze and "encoder" in cfg.freeze):
        raise UserError("video sources train depth: the model needs a depth head that is not frozen")
    pose = PoseNet().to(device) if video else None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("everything is frozen: nothing to train")
    groups = [{"params": params}]
    if pose is not None:  # its own rate: the model is fine-tuned, the pose network learns from nothing
        groups.append({"params": list(pose.parameters()), "lr": cfg.pose_lr})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory '{out}': {e.strerror}") from None
    if state is not None:
        load_state_strict(model, state["model"], f"resume state '{cfg.resume}'")
        if pose is not None and "pose" in state:
            pose.load_state_dict(state["pose"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        log.info("resumed at step %d", start)

    plan = sampling_plan([len(s.data) for s in sources], [s.weight for s in sources], cfg.steps,
                         cfg.batch_size, cfg.seed)[start:]
    loader = DataLoader(MixedSet(sources), batch_sampler=plan, num_workers=cfg.workers,
                        collate_fn=collate_groups([s.kind for s in sources]), persistent_workers=False,
                        pin_memory=device.type == "cuda")
    (out / "train_config.json").write_text(json.dumps({**asdict(cfg), "init_note": init_note}, indent=2))

    reporter = Reporter(cfg, start)
    _train_mode(model, cfg.freeze, pose)
    step = start
    batches = iter(loader)  # creating the iterator draws from torch's RNG: restore the state after it
    if state is not None:
        torch.set_rng_state(state["torch_rng"])
    with reporter, StopRequest(expected=loader_worker_exit) as stop:
        for groups in batches:
            try:
                losses, n_all = _step(model, pose, opt, sched, scaler, groups, sources, cfg, device, use_amp)
            except (RuntimeError, MemoryError) as e:
                if not is_out_of_memory(e):
                    raise
                raise UserError(f"not enough memory on {device} for a step of --batch-size {cfg.batch_size} "
                                f"(crops {cfg.crop[0]}x{cfg.crop[1]} and each source's own size); lower "
                                "--batch-size or --crop") from None
            step += 1
            reporter.step(step, losses, opt.param_groups[0]["lr"], n_all)
            if _save_due(step, cfg):
                run_state.save(model, opt, sched, scaler, step, out, pose)
                _train_mode(model, cfg.freeze, pose)
            if stop.requested:
                break
    final = out / run_state.WEIGHTS
    if step == start or (stop.requested and not _save_due(step, cfg)):
        run_state.save(model, opt, sched, scaler, step, out, pose)
    if stop.requested:
        log.warning("stopped at step %d of %d; %s holds it (the same command with --resume %s continues it)", step, cfg.steps, final, out)
        raise KeyboardInterrupt
    return final


def _frames_loss(model: SegFormer3D, group: Group, source: Source, cfg: TrainConfig, device: torch.device,
                 use_amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(segmentation, depth) losses of labelled frames; each only where its labels exist."""
    images, labels, depths = (t.to(device) for t in group.tensors)
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
        outputs = model(images)
    ls = set_loss(outputs.seg_logits, labels, source.membership, label_weights=source.label_weights)
    if outputs.depth is None:
        ld = ls * 0.0
    elif source.relative_depth:
        ld = scale_invariant_loss(outputs.depth, depths, model.meta.depth)
    else:
        ld = depth_loss(outputs.depth, depths, model.meta.depth, cfg.depth_loss, cfg.silog_lambda)
    return ls, ld


def _video_loss(model: SegFormer3D, pose: torch.nn.Module, group: Group, cfg: TrainConfig, device: torch.device,
                use_amp: bool, pose_only: bool):
    """The photometric terms of a group of triplets: the centre frame's depth from the model, the motion to
    each neighbour from the pose network (at half resolution: motion needs no detail). ``pose_only``: the
    depth is held (no gradient), so that a pose network that starts from nothing does not first teach the
    depth its own mistakes."""
    from ..model.posenet import invert
    from .photometric import moving_mask, triplet_loss

    clean, inputs, K = (t.to(device) for t in group.tensors)
    b, _, c, h, w = inputs.shape
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
        with torch.set_grad_enabled(not pose_only):
            outputs = model(inputs[:, 1])
        half = F.interpolate(inputs.reshape(b * 3, c, h, w), scale_factor=0.5, mode="bilinear",
                             align_corners=False, antialias=True).reshape(b, 3, c, h // 2, w // 2)
        # centre -> previous is (previous -> centre) inverted: the pose network sees every pair in time order
        poses = (invert(pose(half[:, 0], half[:, 1]).float()), pose(half[:, 1], half[:, 2]).float())
    depth = model.meta.depth.to_depth(outputs.depth.float())
    moving = moving_mask(outputs.seg_logits, model.meta.class_names, (h, w))
    return triplet_loss(clean, depth, K.float(), poses, moving, smooth_weight=cfg.smoothness)


def _step(model: SegFormer3D, pose: torch.nn.Module | None, opt, sched, scaler, groups: list[Group],
          sources: list[Source], cfg: TrainConfig, device: torch.device, use_amp: bool
          ) -> tuple[dict[str, float], int]:
    """One optimiser step on a batch split into groups; returns its loss terms and its image count."""
    loss, n_all = 0.0, sum(g.size for g in groups)
    terms = {"seg": 0.0, "depth": 0.0}
    for group in groups:
        share = group.size / n_all  # each loss only where its labels exist, weighted by its samples
        source = sources[group.sources[0]]
        if source.kind == "video":
            t = _video_loss(model, pose, group, cfg, device, use_amp, pose_only=sched.last_epoch < cfg.pose_warmup)
            loss = loss + share * cfg.photometric_weight * t.loss
            terms["photo"] = terms.get("photo", 0.0) + t.photometric * group.size
            terms["kept"] = terms.get("kept", 0.0) + t.kept * group.size
            continue
        ls, ld = _frames_loss(model, group, source, cfg, device, use_amp)
        loss = loss + share * (cfg.seg_weight * ls + cfg.depth_weight * ld)
        terms["seg"] += share * ls.item()
        terms["depth"] += share * ld.item()
    video_n = sum(g.size for g in groups if sources[g.sources[0]].kind == "video")
    for k in ("photo", "kept"):
        if k in terms:
            terms[k] /= video_n
    if not torch.isfinite(loss):
        raise UserError(f"loss became {float(loss)} at step {sched.last_epoch}; lower --lr")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()  # per iteration, not per epoch
    return terms, n_all


def _save_due(step: int, cfg: TrainConfig) -> bool:
    return step % cfg.save_every == 0 or step == cfg.steps
