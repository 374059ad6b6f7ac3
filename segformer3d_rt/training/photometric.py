"""Self-supervised depth from video: the photometric loss of a frame triplet, written from the papers.

Zhou et al. 2017 (view synthesis as supervision) and Godard et al. 2019 (Monodepth2: per-pixel minimum
reprojection, auto-masking, full-resolution multi-scale). The centre frame's depth and the camera motion to the
previous and the next frame (from :class:`~segformer3d_rt.model.posenet.PoseNet`) warp each neighbour onto the
centre frame; where the warp is right the two agree. Per pixel:

- error = 0.85 (1 - SSIM) / 2 + 0.15 |a - b| (SSIM over 3x3 windows, the papers' constants);
- the minimum over the two neighbours (a pixel hidden in one is usually seen in the other);
- auto-masking: a pixel whose *unwarped* neighbour already matches better than any warp (it moves with the
  camera, or nothing moves: overlays, a car ahead at our speed, a still camera) is left out;
- pixels the segmentation head calls a person, rider, car, truck, bus, train, motorcycle or bicycle are left out
  too: they move on their own, which a rigid warp cannot explain, and they are what pulls Monodepth2-style
  training towards "infinitely far" holes on cars driving ahead;
- pixels that warp from outside a neighbour do not count for it.

Edge-aware smoothness on the mean-normalised inverse depth, weight 1e-3 / 2^scale. Scales: the loss is taken
on the frame at full, half and quarter resolution (depth resized to each); the coarse scales see large
displacements, the full one the detail. SSIM and the warp are a few lines of torch (``avg_pool2d``,
``grid_sample``), written here rather than taken from kornia to keep the dependency list short; the tests check
them against exact cases (a known shift, a known motion).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# the classes that move on their own (Cityscapes names; a checkpoint's classes are looked up by name)
MOVING_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
SSIM_WEIGHT = 0.85
SMOOTHNESS = 1e-3
SCALES = (0, 1, 2)
MIN_DEPTH, MAX_DEPTH = 0.1, 300.0


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM over 3x3 windows (reflect-padded) of images in [0, 1]; B x C x H x W."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mx, my = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    vx = F.avg_pool2d(x * x, 3, 1) - mx * mx
    vy = F.avg_pool2d(y * y, 3, 1) - my * my
    cxy = F.avg_pool2d(x * y, 3, 1) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def photometric_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W: 0.85 (1 - SSIM) / 2 + 0.15 L1, averaged over colour channels."""
    structure = ((1 - ssim(a, b)) / 2).clamp(0, 1).mean(1, keepdim=True)
    return SSIM_WEIGHT * structure + (1 - SSIM_WEIGHT) * (a - b).abs().mean(1, keepdim=True)


def pixel_rays(K: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """B x 3 x (h*w) rays K^-1 [u, v, 1] through the pixel centres (u = x + 0.5: continuous coordinates)."""
    v, u = torch.meshgrid(torch.arange(h, device=K.device, dtype=K.dtype) + 0.5,
                          torch.arange(w, device=K.device, dtype=K.dtype) + 0.5, indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)])  # 3 x HW
    return torch.linalg.inv(K) @ pix


def warp(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``source`` where each target pixel lands in it: (warped B x C x H x W, valid B x 1 x H x W).

    depth: B x 1 x H x W of the target frame; K: B x 3 x 3 at this resolution; T: B x 4 x 4 target -> source."""
    b, _, h, w = depth.shape
    points = pixel_rays(K, h, w) * depth.reshape(b, 1, -1)  # B x 3 x HW in the target camera
    moved = T[:, :3, :3] @ points + T[:, :3, 3:]
    proj = K @ moved
    z = proj[:, 2:3].clamp_min(1e-6)
    u, v = proj[:, 0:1] / z, proj[:, 1:2] / z
    grid = torch.cat([2 * u / w - 1, 2 * v / h - 1], dim=1).reshape(b, 2, h, w).permute(0, 2, 3, 1)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(dim=3, keepdim=True).permute(0, 3, 1, 2) & (moved[:, 2:3] > 1e-3).reshape(b, 1, h, w)
    return warped, inside


def smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised inverse depth: |d disp| e^-|d image|."""
    disp = 1.0 / depth
    disp = disp / disp.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def scale_intrinsics(K: torch.Tensor, factor: float) -> torch.Tensor:
    """K of the same camera with the image resized by ``factor`` (continuous coordinates scale exactly)."""
    S = torch.tensor([[factor, 0, 0], [0, factor, 0], [0, 0, 1]], dtype=K.dtype, device=K.device)
    return S @ K


@dataclass
class PhotometricTerms:
    loss: torch.Tensor
    photometric: float  # mean over the pixels that count of min(reprojection, unwarped) error
    smoothness: float
    kept: float  # share of pixels that counted (after auto-masking, moving classes and out-of-view)
    moving: float  # share of pixels left out as moving classes
    still: float = 0.0  # the same mean with no motion at all (unwarped error): what the warps are measured against


def triplet_loss(frames: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, poses: tuple[torch.Tensor, torch.Tensor],
                 moving: torch.Tensor | None = None, scales: tuple[int, ...] = SCALES,
                 smooth_weight: float = SMOOTHNESS) -> PhotometricTerms:
    """frames: B x 3 x 3 x H x W in [0, 1] (previous, centre, next; not colour-augmented); depth: B x 1 x h x w
    of the centre frame (any resolution, resized per scale); K: B x 3 x 3 at H x W; poses: centre -> previous,
    centre -> next (B x 4 x 4); moving: B x 1 x H x W bool, pixels to leave out."""
    b, _, _, H, W = frames.shape
    total, photo_sum, smooth_sum, kept_sum, still_sum = 0.0, 0.0, 0.0, 0.0, 0.0
    log_depth = depth.clamp(MIN_DEPTH, MAX_DEPTH).log()
    for s in scales:
        f = 0.5 ** s
        h, w = max(1, round(H * f)), max(1, round(W * f))
        imgs = frames.reshape(b * 3, 3, H, W)
        if s:
            imgs = F.interpolate(imgs, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        imgs = imgs.reshape(b, 3, 3, h, w)
        prev, centre, nxt = imgs.unbind(1)
        d = F.interpolate(log_depth, size=(h, w), mode="bilinear", align_corners=False).exp()
        Ks = scale_intrinsics(K, w / W)
        errors, identity, valids = [], [], []
        for src, T in ((prev, poses[0]), (nxt, poses[1])):
            warped, valid = warp(src, d, Ks, T)
            e = photometric_error(warped, centre)
            errors.append(torch.where(valid, e, torch.full_like(e, 1e3)))
            identity.append(photometric_error(src, centre))
            valids.append(valid)
        reproj = torch.cat(errors, 1).min(1, keepdim=True).values
        ident = torch.cat(identity, 1).min(1, keepdim=True).values
        # a tiny random offset breaks ties in favour of neither (a perfectly still pixel)
        keep = (reproj < ident + 1e-5 * torch.randn_like(reproj).abs()) & (valids[0] | valids[1])
        counted = torch.ones_like(keep)
        if moving is not None:
            m = moving if s == 0 else F.interpolate(moving.float(), size=(h, w), mode="nearest") > 0
            keep, counted = keep & ~m, ~m
        # Monodepth2's value: the mean over the pixels that count of min(reprojection, unwarped) error; a left-out
        # pixel adds its unwarped error, which has no gradient, so it can never lower the loss below doing nothing
        per_pixel = torch.where(keep, reproj, ident)
        photo = (per_pixel * counted).sum() / counted.sum().clamp_min(1)
        smooth = smoothness(d, centre)
        total = total + photo + smooth_weight / (2 ** s) * smooth
        photo_sum += float(photo.detach())
        still_sum += float((ident * counted).sum() / counted.sum().clamp_min(1))
        smooth_sum += float(smooth.detach())
        kept_sum += float(keep.float().mean())
    k = len(scales)
    moving_share = float(moving.float().mean()) if moving is not None else 0.0
    return PhotometricTerms(total / k, photo_sum / k, smooth_sum / k, kept_sum / k, moving_share, still_sum / k)


def moving_mask(seg_logits: torch.Tensor, class_names: tuple[str, ...], size: tuple[int, int],
                grow: int = 5) -> torch.Tensor | None:
    """B x 1 x H x W bool: pixels predicted as a class that moves on its own, grown by ``grow`` pixels (its
    outline is where the prediction is least sure). None when the model has none of those classes."""
    ids = [k for k, n in enumerate(class_names) if n in MOVING_CLASSES]
    if not ids:
        return None
    logits = F.interpolate(seg_logits.detach().float(), size=size, mode="bilinear", align_corners=False)
    pred = logits.argmax(1, keepdim=True)
    mask = torch.isin(pred, torch.tensor(ids, device=pred.device)).float()
    if grow:
        mask = F.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow)
    return mask > 0
