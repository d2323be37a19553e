"""Canonical 3-D keypoint detector of face-vid2vid as used by SadTalker (official:
OpenTalker/SadTalker ``src/facerender/modules/keypoint_detector.py``).

Input ``image`` (B, 3, S, S) RGB in [0, 1], S = 256 or 512 (any multiple of 128 works).
Output ``keypoints`` (B, 15, 3): expected (x, y, z) coordinates in [-1, 1] of 15 soft-argmax
heat volumes. Runs once per avatar (no frame delay).

Steps: Gaussian anti-alias downsample by 4 (kernel = checkpoint buffer ``down.weight``) ->
2-D encoder of 5 DownBlock2d (3 -> 1024 channels, S/4 -> S/128) -> 1x1 conv to 16384 channels
viewed as a (1024, 16, h, w) volume -> 5 UpBlock3d (1024 -> 32 channels, back to S/4) ->
Conv3d to 15 logits volumes -> softmax of logits / 0.1 over all 16 * (S/4)^2 positions ->
expectation of the coordinate grid.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from msadtalker.models.blocks import DownBlock2d, UpBlock3d, coordinate_grid
from msadtalker.models.contract import ExportContract, TensorSpec

NUM_KP = 15
_ENCODER_CHANNELS = (3, 64, 128, 256, 512, 1024)
_VOLUME_CHANNELS = 1024
_VOLUME_DEPTH = 16
_DECODER_CHANNELS = (1024, 512, 256, 128, 64, 32)
_TEMPERATURE = 0.1
_DOWNSCALE = 4


def gaussian_downsample_kernel(channels: int = 3, scale: float = 1.0 / _DOWNSCALE) -> torch.Tensor:
    """Depthwise anti-alias kernel (channels, 1, k, k): normalised Gaussian, sigma (1/scale-1)/2.

    At scale 0.25 this is sigma 1.5 on 13 taps. The official checkpoint stores the same kernel
    as ``down.weight``; loading overwrites this default.
    """
    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    taps = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    one_d = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = one_d[:, None] * one_d[None, :]
    kernel = kernel / kernel.sum()
    return kernel.expand(channels, 1, size, size).clone()


class _KPHourglass(nn.Module):
    """2-D encoder -> channel-to-depth reshape -> 3-D decoder: (B,3,s,s) -> (B,32,16,s,s)."""

    def __init__(self) -> None:
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i, (cin, cout) in enumerate(pairwise(_ENCODER_CHANNELS)):
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, cout))
        self.conv = nn.Conv2d(_ENCODER_CHANNELS[-1], _VOLUME_CHANNELS * _VOLUME_DEPTH, 1)
        self.up_blocks = nn.Sequential()
        for i, (cin, cout) in enumerate(pairwise(_DECODER_CHANNELS)):
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.conv(self.down_blocks(x))
        # channel index c * 16 + d -> (channel c, depth d)
        volume = flat.unflatten(1, (_VOLUME_CHANNELS, _VOLUME_DEPTH))
        out: torch.Tensor = self.up_blocks(volume)
        return out


class KPDetector(nn.Module):
    """Image (B, 3, S, S) in [0, 1] -> canonical keypoints (B, 15, 3); see module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.down = _AntiAliasDownsample()
        self.predictor = _KPHourglass()
        self.kp = nn.Conv3d(_DECODER_CHANNELS[-1], NUM_KP, 3, padding=1)
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.kp(self.predictor(self.down(image)))
        _, _, depth, height, width = logits.shape
        probs = F.softmax(logits.flatten(2) / _TEMPERATURE, dim=2).unsqueeze(-1)
        grid = coordinate_grid(depth, height, width, like=logits).reshape(-1, 3)
        # Element-wise product + sum rather than a matmul: the reduction over 65 536 positions
        # is then pairwise and stays within ~4e-6 of the official result (a BLAS matmul drifts
        # by ~4e-5 here).
        return (probs * grid).sum(dim=2)

    @staticmethod
    def export_contract(size: int = 256) -> ExportContract:
        """ONNX contract: image (batch, 3, S, S) float32 -> keypoints (batch, 15, 3)."""
        return ExportContract(
            name="kp_detector",
            inputs=(TensorSpec("image", (1, 3, size, size), {0: "batch"}),),
            outputs=(TensorSpec("keypoints", (1, NUM_KP, 3), {0: "batch"}),),
            example_inputs=lambda: (torch.rand(1, 3, size, size),),
        )


class _AntiAliasDownsample(nn.Module):
    """Depthwise Gaussian blur with zero padding, keeping every 4th pixel from index 0."""

    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", gaussian_downsample_kernel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A stride-4 conv reads exactly the positions 0, 4, 8, ... of the full blur.
        pad = self.weight.shape[-1] // 2
        return F.conv2d(x, self.weight, stride=_DOWNSCALE, padding=pad, groups=self.weight.shape[0])
