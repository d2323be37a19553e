"""SPADE image decoder of the SadTalker generator (official: OpenTalker/SadTalker
``src/facerender/modules/generator.py`` ``SPADEDecoder``, its blocks in
``src/facerender/modules/util.py``).

Input ``feature`` (B, 256, S/4, S/4): the warped, occlusion-weighted source features, used both
as the decoded signal and as the SPADE conditioning map ``seg``. Output (B, 3, S, S) RGB in
[0, 1] (sigmoid).

The official decoder convs ``conv_0`` / ``conv_1`` / ``conv_s`` carry spectral norm
(``weight_orig``, ``weight_u``, ``weight_v``). Here they are plain convolutions: the weight
loader folds ``weight_orig / sigma`` once (eval never runs a power iteration), which keeps the
exported graph free of the per-call normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_HIDDEN = 128
_SLOPE = 0.2
_MIDDLE_BLOCKS = 6


class SPADE(nn.Module):
    """Spatially-adaptive norm: instance_norm(x) * (1 + gamma(seg)) + beta(seg).

    InstanceNorm has no affine part and always uses the per-sample statistics (biased variance,
    eps 1e-5). ``seg`` must already have x's resolution: upstream nearest-resizes it inside every
    SPADE; :class:`SPADEDecoder` does it once per resolution instead (same values).
    """

    def __init__(self, norm_ch: int, label_ch: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_ch, _HIDDEN, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(_HIDDEN, norm_ch, 3, padding=1)
        self.mlp_beta = nn.Conv2d(_HIDDEN, norm_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        hidden = self.mlp_shared(seg)
        gamma: torch.Tensor = self.mlp_gamma(hidden)
        beta: torch.Tensor = self.mlp_beta(hidden)
        return normalized * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
    """x_s + conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x)))))), lrelu slope 0.2.

    The shortcut x_s is ``conv_s(SPADE_s(x))`` (1x1, no bias, no activation) when the channel
    count changes, else x itself.
    """

    def __init__(self, in_ch: int, out_ch: int, label_ch: int) -> None:
        super().__init__()
        mid_ch = min(in_ch, out_ch)
        self.conv_0 = nn.Conv2d(in_ch, mid_ch, 3, padding=1)
        self.conv_1 = nn.Conv2d(mid_ch, out_ch, 3, padding=1)
        self.norm_0 = SPADE(in_ch, label_ch)
        self.norm_1 = SPADE(mid_ch, label_ch)
        self.learned_shortcut = in_ch != out_ch
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(in_ch, out_ch, 1, bias=False)
            self.norm_s = SPADE(in_ch, label_ch)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut: torch.Tensor = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx: torch.Tensor = self.conv_0(F.leaky_relu(self.norm_0(x, seg), _SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), _SLOPE))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """(B, 256, s, s) -> (B, 3, 4s, 4s): conv 256->512, 6 blocks at s, x2, 512->256, x2, 256->64."""

    def __init__(self, in_ch: int = 256, out_ch: int = 64) -> None:
        super().__init__()
        wide = 2 * in_ch
        self.fc = nn.Conv2d(in_ch, wide, 3, padding=1)
        for i in range(_MIDDLE_BLOCKS):
            self.add_module(f"G_middle_{i}", SPADEResBlock(wide, wide, in_ch))
        self.up_0 = SPADEResBlock(wide, in_ch, in_ch)
        self.up_1 = SPADEResBlock(in_ch, out_ch, in_ch)
        self.conv_img = nn.Conv2d(out_ch, 3, 3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        # Conditioning map per resolution, made once: nearest x2 twice == nearest x4 exactly.
        seg = feature
        seg_2x = _upsample2(seg)
        seg_4x = _upsample2(seg_2x)
        x = self.fc(feature)
        for i in range(_MIDDLE_BLOCKS):
            x = self.get_submodule(f"G_middle_{i}")(x, seg)
        x = self.up_0(_upsample2(x), seg_2x)
        x = self.up_1(_upsample2(x), seg_4x)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, _SLOPE)))


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
