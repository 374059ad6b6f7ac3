"""A small pose network for self-supervised depth from video: two frames in, the camera motion between them out.

Written from the description in Zhou et al. 2017 ("Unsupervised Learning of Depth and Ego-Motion from Video")
and Godard et al. 2019 (Monodepth2): strided convolutions over the two frames stacked as channels, a 1x1
convolution to 6 numbers per position, averaged over the image: an axis-angle rotation and a translation,
scaled by 0.01 so that training starts near "no motion". Used for training only; it is never shipped in a
checkpoint (its state lives in the training run's resume file).
"""
from __future__ import annotations

import torch
from torch import nn

WIDTHS = (16, 32, 64, 128, 256, 256, 256)


class PoseNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 6
        for i, w in enumerate(widths):
            k = 7 if i == 0 else 5 if i == 1 else 3
            layers += [nn.Conv2d(c, w, k, stride=2, padding=k // 2), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 6, 1)
        nn.init.zeros_(self.head.bias)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W frames (normalised as the depth network's input) -> B x 4 x 4 transforms taking points
        in the target camera's frame to the source camera's frame."""
        x = self.head(self.features(torch.cat([target, source], dim=1))).mean(dim=(2, 3)) * 0.01
        return transform(x[:, :3], x[:, 3:])


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
