"""Wav2Lip-style audio encoder used by ExpNet: one mel window -> 512 features (official:
OpenTalker/SadTalker ``src/audio2exp_models/networks.py``, ``SimpleWrapperV2.audio_encoder``).

Input ``mel`` (B, 1, 80, 16): 80 mel bins (height) x 16 mel frames (width), values in [-4, 4].
Output (B, 512, 1, 1). Frames are independent (no delay, no state).

13 blocks of Conv2d -> BatchNorm2d (eval statistics) -> (+ block input) -> ReLU. Spatial sizes:
80x16 -> (3 residual @32) -> 27x16 @64 -> 9x6 @128 -> 3x3 @256 -> 1x1 @512 -> 1x1 @512.
Module names (``<i>.conv_block.{0,1}``) match the checkpoint keys ``audio_encoder.<i>...``.
"""

from __future__ import annotations

import torch
from torch import nn

# (in, out, kernel, stride, padding, residual) of the 13 blocks, in checkpoint order 0..12.
_BLOCKS: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)

AUDIO_FEATURES = 512


class AudioConvBlock(nn.Module):
    """Conv2d -> BatchNorm2d -> (+ input when ``residual``) -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool,
    ) -> None:
        super().__init__()
        if residual and (in_channels != out_channels or stride != 1):
            raise ValueError("a residual block must keep channels and resolution")
        self.conv_block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x  # the skip joins before the activation
        return torch.relu(out)


class AudioEncoder(nn.Sequential):
    """(B, 1, 80, 16) mel window -> (B, 512, 1, 1); see the module docstring."""

    def __init__(self) -> None:
        super().__init__(*(AudioConvBlock(*spec) for spec in _BLOCKS))
