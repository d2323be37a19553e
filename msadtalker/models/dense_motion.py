"""Dense motion network of the SadTalker generator (official: OpenTalker/SadTalker
``src/facerender/modules/dense_motion.py``).

From the (compressed) source feature volume and the source / driving keypoints it predicts, at
feature resolution d x h x w = 16 x S/4 x S/4:

* ``mask`` (B, 16, d, h, w): softmax weights of 16 candidate motions (background first), as
  returned by the official network, i.e. BEFORE entries < 1e-3 are zeroed;
* ``deformation`` (B, d, h, w, 3): the sampling grid (x, y, z in [-1, 1]) that warps the source
  volume into the driving pose, sum_k mask_k * motion_k with the zeroed (not renormalised) mask;
* ``occlusion_map`` (B, 1, h, w): sigmoid visibility of the warped features.

Candidate motions: the identity grid (background) and, per keypoint k, ``grid - kp_driving_k +
kp_source_k``. Each one resamples the 4-channel compressed volume (trilinear, zero padding,
align_corners=False, as the official code). The hourglass sees, per motion, the difference of
Gaussian heat maps (driving - source, variance 0.01; zero for the background) followed by the 4
resampled channels: 16 x 5 = 80 input channels, channel index k * 5 + j.

h and w must be multiples of 32 (five 2x poolings in the hourglass).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from msadtalker.models.blocks import (
    DownBlock3d,
    UpBlock3d,
    coordinate_grid,
    gaussian_heatmaps,
)
from msadtalker.models.volume_sampling import VolumeSampler, trilinear_sample

NUM_KP = 15
NUM_MOTIONS = NUM_KP + 1
FEATURE_CHANNELS = 32
COMPRESSED_CHANNELS = 4
_HEATMAP_VARIANCE = 0.01
_MASK_THRESHOLD = 1e-3
_BLOCK_EXPANSION = 32
_MAX_FEATURES = 1024
_NUM_BLOCKS = 5
_DEPTH = 16


class DenseMotion(NamedTuple):
    """Outputs of :class:`DenseMotionNetwork` (shapes in the module docstring)."""

    mask: torch.Tensor
    deformation: torch.Tensor
    occlusion_map: torch.Tensor


def _hourglass_width(level: int) -> int:
    return min(_MAX_FEATURES, _BLOCK_EXPANSION * (1 << level))


class _Encoder3d(nn.Module):
    """5 DownBlock3d; returns the input and every level's output (the decoder's skips)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        widths = [in_ch] + [_hourglass_width(i + 1) for i in range(_NUM_BLOCKS)]
        self.down_blocks = nn.ModuleList(
            DownBlock3d(widths[i], widths[i + 1]) for i in range(_NUM_BLOCKS)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for block in self.down_blocks:
            features.append(block(features[-1]))
        return features


class _Decoder3d(nn.Module):
    """5 UpBlock3d, each output concatenated with its skip, then Conv3d -> BN3d -> ReLU."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        blocks = []
        for level in reversed(range(_NUM_BLOCKS)):
            # the deepest block sees the bottleneck alone, the others [up-path | skip]
            factor = 1 if level == _NUM_BLOCKS - 1 else 2
            blocks.append(UpBlock3d(factor * _hourglass_width(level + 1), _hourglass_width(level)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = _BLOCK_EXPANSION + in_ch
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = features[-1]
        for block, skip in zip(self.up_blocks, reversed(features[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class _Hourglass3d(nn.Module):
    """U-Net over (C, 16, h, w) volumes: (B, 80, d, h, w) -> (B, 112, d, h, w)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.encoder = _Encoder3d(in_ch)
        self.decoder = _Decoder3d(in_ch)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


class DenseMotionNetwork(nn.Module):
    """Keypoint-driven dense motion; see the module docstring for inputs and outputs.

    ``forward(volume, kp_source, kp_driving)`` takes the generator's source feature volume
    (B, 32, 16, h, w). The per-avatar part, :meth:`compress_volume`, depends only on that
    volume, so a live renderer computes it once and calls :meth:`from_compressed` per frame.
    """

    def __init__(self) -> None:
        super().__init__()
        in_ch = NUM_MOTIONS * (COMPRESSED_CHANNELS + 1)
        self.hourglass = _Hourglass3d(in_ch)
        hidden = self.hourglass.out_channels
        self.mask = nn.Conv3d(hidden, NUM_MOTIONS, 7, padding=3)
        self.compress = nn.Conv3d(FEATURE_CHANNELS, COMPRESSED_CHANNELS, 1)
        self.norm = nn.BatchNorm3d(COMPRESSED_CHANNELS)
        self.occlusion = nn.Conv2d(hidden * _DEPTH, 1, 7, padding=3)
        # the warp; export may swap in the 2-D form (msadtalker.models.volume_sampling)
        self.sample_volume: VolumeSampler = trilinear_sample

    def compress_volume(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, 32, d, h, w) source features -> (B, 4, d, h, w) compressed features."""
        return F.relu(self.norm(self.compress(volume)))

    def forward(
        self, volume: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> DenseMotion:
        return self.from_compressed(self.compress_volume(volume), kp_source, kp_driving)

    def from_compressed(
        self, compressed: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> DenseMotion:
        """Per-frame part. ``compressed`` may have batch 1 (shared source) or kp's batch."""
        batch = kp_driving.shape[0]
        compressed = compressed.expand(batch, -1, -1, -1, -1)
        depth, height, width = compressed.shape[2:]
        grid = coordinate_grid(depth, height, width, like=compressed)

        motions = self._sparse_motions(grid, kp_source, kp_driving)  # (B, 16, d, h, w, 3)
        per_motion = compressed.unsqueeze(1).expand(-1, NUM_MOTIONS, -1, -1, -1, -1)
        deformed = self.sample_volume(per_motion.flatten(0, 1), motions.flatten(0, 1)).view(
            batch, NUM_MOTIONS, -1, depth, height, width
        )  # (B, 16, 4, d, h, w)

        heat = gaussian_heatmaps(kp_driving, grid, _HEATMAP_VARIANCE) - gaussian_heatmaps(
            kp_source, grid, _HEATMAP_VARIANCE
        )
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)  # background first
        hourglass_in = torch.cat([heat.unsqueeze(2), deformed], dim=2).flatten(1, 2)

        hidden = self.hourglass(hourglass_in)  # (B, 112, d, h, w)
        mask = F.softmax(self.mask(hidden), dim=1)
        # Small weights are dropped without renormalising the rest (official behaviour).
        kept = torch.where(mask < _MASK_THRESHOLD, torch.zeros_like(mask), mask)
        deformation = (kept.unsqueeze(-1) * motions).sum(dim=1)

        # (112, 16) -> 1792 channels, index c * 16 + d
        occlusion_map = torch.sigmoid(self.occlusion(hidden.flatten(1, 2)))
        return DenseMotion(mask=mask, deformation=deformation, occlusion_map=occlusion_map)

    @staticmethod
    def _sparse_motions(
        grid: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """Identity grid (background) + per-keypoint translations: (B, 16, d, h, w, 3)."""
        k_driving = kp_driving[:, :, None, None, None, :]
        k_source = kp_source[:, :, None, None, None, :]
        keypoint_motions = grid[None, None] - k_driving + k_source
        background = grid[None, None].expand(kp_driving.shape[0], 1, -1, -1, -1, -1)
        return torch.cat([background, keypoint_motions], dim=1)
