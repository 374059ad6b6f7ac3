"""A small pose network for self-supervised depth from video: two frames in, the camera motion between them out.

Written from the description in Zhou et al. 2017 ("Unsupervised Learning of Depth and Ego-Motion from Video")
and Godard et al. 2019 (Monodepth2): strided convolutions over the two frames stacked as channels, a 1x1
convolution to 6 numbers per position, averaged over the image: an axis-angle rotation and a translation.
The 1x1 convolution starts at zero, so training starts at "no motion". Unlike those papers, whose depth starts
with no scale, ours is already metric (the synthetic world teaches metres): the translation is in metres (scale
1; a car at 10 frames a second moves 0.5-3 m between frames) and the rotation in radians scaled by 0.01 (a few
milliradians between frames). With the papers' 0.01 on both, the translation needed a hundred times longer to
reach metres than the rotation to reach its size, and training fitted rotations alone (measured: after 250
steps, translations of 2 mm and fewer pixels explained than by no motion at all). Used for training only; it
is never shipped in a checkpoint (its state lives in the training run's resume file).
"""
from __future__ import annotations

import torch
from torch import nn

WIDTHS = (16, 32, 64, 128, 256, 256, 256)
ROTATION_SCALE = 0.01  # radians per unit of output
TRANSLATION_SCALE = 1.0  # metres per unit of output
# bounds of the motion between two frames (tanh-squashed, linear near zero): a motion far beyond them makes every
# pixel warp worse than no motion, every pixel is then auto-masked, and no gradient could ever bring it back
MAX_ROTATION = 0.3  # radians
MAX_TRANSLATION = 10.0  # metres (a car at 10 frames a second and 360 km/h)


class PoseNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 6
        for i, w in enumerate(widths):
            k = 7 if i == 0 else 5 if i == 1 else 3
            # group norm keeps the features (and so each optimiser step's change of the motion) of the same size
            # in every layer and for any batch size; without it one step moved the translation by metres
            layers += [nn.Conv2d(c, w, k, stride=2, padding=k // 2), nn.GroupNorm(min(8, w // 4), w),
                       nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 6, 1)
        nn.init.zeros_(self.head.weight)  # no motion at first; its gradient is not zero, so it learns at once
        nn.init.zeros_(self.head.bias)

    def forward(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W frames in time order (normalised as the depth network's input) -> B x 4 x 4 transforms
        taking points in the earlier camera's frame to the later camera's frame. Always in time order (Monodepth2
        does the same): the motion is then nearly the same for every pair of a drive ("forward"), which the
        network learns at once; the motion to a previous frame is this one inverted (:func:`invert`)."""
        x = self.head(self.features(torch.cat([earlier, later], dim=1))).mean(dim=(2, 3))
        rot = MAX_ROTATION * torch.tanh(x[:, :3] * ROTATION_SCALE / MAX_ROTATION)
        shift = MAX_TRANSLATION * torch.tanh(x[:, 3:] * TRANSLATION_SCALE / MAX_TRANSLATION)
        return transform(rot, shift)


def rotation(axis_angle: torch.Tensor) -> torch.Tensor:
    """B x 3 axis-angle vectors -> B x 3 x 3 rotation matrices (Rodrigues' formula)."""
    angle = axis_angle.norm(dim=1, keepdim=True).clamp_min(1e-8)
    k = axis_angle / angle
    kx, ky, kz = k.unbind(1)
    zero = torch.zeros_like(kx)
    K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=1).view(-1, 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, device=axis_angle.device, dtype=axis_angle.dtype).expand_as(K)
    return eye + s * K + (1 - c) * (K @ K)


def transform(axis_angle: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """B x 4 x 4 rigid transforms [R | t]."""
    T = torch.zeros(axis_angle.shape[0], 4, 4, device=axis_angle.device, dtype=axis_angle.dtype)
    T[:, :3, :3] = rotation(axis_angle)
    T[:, :3, 3] = translation
    T[:, 3, 3] = 1
    return T


def invert(T: torch.Tensor) -> torch.Tensor:
    """B x 4 x 4 rigid transforms inverted: [R | t]^-1 = [R^T | -R^T t]."""
    R_t = T[:, :3, :3].transpose(1, 2)
    out = torch.zeros_like(T)
    out[:, :3, :3] = R_t
    out[:, :3, 3] = -(R_t @ T[:, :3, 3:])[..., 0]
    out[:, 3, 3] = 1
    return out
