"""Trilinear sampling of a feature volume, volumetric or as 2-D samples over depth slices.

The generator warps volumes twice per frame (``dense_motion`` and ``generator``) with the
official ``F.grid_sample`` on 5-D tensors (trilinear, zeros padding, ``align_corners=False``).
ONNX has 5-D GridSample only from opset 20 and many runtimes (older TensorRT, mobile and web
runtimes) have only the 2-D one, so :func:`sliced_trilinear_sample` computes the same values
with 4-D grid samples, which every runtime has: each depth slice k is sampled bilinearly at
every point's (x, y) (zeros padding, as the volumetric sample) and the slices are blended with
the linear "hat" weights ``max(0, 1 - |iz - k|)`` of the point's depth ``iz`` in pixel units.
Trilinear interpolation is exactly that sum (at most two weights are non-zero), so the two
agree to float32 rounding; a depth outside the volume weighs every slice 0 (zero padding).

Cost: D (16) 2-D samples instead of one 5-D sample, i.e. 16 x 4 taps per point instead of 8;
the warps are a small part of the generator's work (docs/export.md has the figures).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

VolumeSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def trilinear_sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) sampled at (B, Do, Ho, Wo, 3) (x, y, z in [-1, 1]) -> (B, C, Do, Ho, Wo)."""
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sliced_trilinear_sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """:func:`trilinear_sample` with 4-D grid samples only (module docstring)."""
    depth = volume.shape[2]
    out_shape = (-1, volume.shape[1], *grid.shape[1:4])
    plane = grid[..., :2].flatten(1, 2)  # (B, Do * Ho, Wo, 2): the same (x, y) for every slice
    iz = ((grid[..., 2] + 1) * depth - 1) * 0.5  # align_corners=False pixel units
    out = torch.zeros((), dtype=volume.dtype, device=volume.device)
    for k in range(depth):  # the architecture's fixed depth (16): unrolled when exported
        weight = (1 - (iz - k).abs()).clamp(min=0).unsqueeze(1)
        sampled = F.grid_sample(
            volume[:, :, k], plane, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out = out + sampled.reshape(out_shape) * weight
    return out


SAMPLERS: Mapping[str, VolumeSampler] = MappingProxyType(
    {"volumetric": trilinear_sample, "sliced": sliced_trilinear_sample}
)


def use_volume_sampler(module: nn.Module, form: str) -> nn.Module:
    """Make every warp in ``module`` (those with a ``sample_volume`` attribute) use ``form``
    (``volumetric`` or ``sliced``); returns ``module``."""
    try:
        sampler = SAMPLERS[form]
    except KeyError:
        raise ValueError(
            f"volume sampler must be one of {', '.join(SAMPLERS)}, got {form!r}"
        ) from None
    for sub in module.modules():
        if hasattr(sub, "sample_volume"):
            sub.sample_volume = sampler  # type: ignore[assignment]  # nn.Module's setattr typing
    return module
