"""Building blocks shared by the face-vid2vid renderer networks (KPDetector, generator).

Attribute names (``conv``, ``norm``, ``conv1`` ...) follow the official checkpoint keys so the
networks load with ``strict=True``. All BatchNorms are meant to run in eval mode with their
stored statistics (eps 1e-5). Everything is written without in-place ops and without Python
control flow on tensor values, so the modules trace and export to ONNX as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Identity sampling grid (depth, height, width, 3) holding (x, y, z) in [-1, 1].

    x runs along width, y along height, z along depth; each axis is ``2 * i / (n - 1) - 1``, so
    the grid spans exactly [-1, 1] (the consumers still sample with align_corners=False, as the
    official code does). ``like`` only provides dtype and device.
    """

    def axis(n: int) -> torch.Tensor:
        steps = torch.arange(n, dtype=like.dtype, device=like.device)
        return 2.0 * (steps / (n - 1)) - 1.0

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack((x, y, z), dim=-1)


def gaussian_heatmaps(
    keypoints: torch.Tensor, grid: torch.Tensor, variance: float = 0.01
) -> torch.Tensor:
    """Unnormalised 3-D Gaussians around keypoints (B, K, 3) on ``grid`` -> (B, K, D, H, W)."""
    offsets = grid[None, None] - keypoints[:, :, None, None, None, :]
    return torch.exp(-0.5 * offsets.pow(2).sum(dim=-1) / variance)


class SameBlock2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_ch)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.leaky_relu(out, 0.01) if self.leaky else F.relu(out)


class DownBlock2d(nn.Module):
    """Conv2d 3x3 -> BatchNorm2d -> ReLU -> AvgPool 2: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class DownBlock3d(nn.Module):
    """Conv3d 3x3x3 -> BatchNorm3d -> ReLU -> AvgPool (1, 2, 2): depth kept, H and W halved."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest upsample (1, 2, 2) -> Conv3d 3x3x3 -> BatchNorm3d -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(up)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm3d(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out
