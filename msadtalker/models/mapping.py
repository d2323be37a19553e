"""MappingNet (official: OpenTalker/SadTalker ``src/facerender/modules/mapping.py``): 3DMM windows
-> keypoint motion.

Input ``coeffs`` (B, C, 27): C = 70 (``[exp 64 | angles 3 | trans 3]``, preprocess crop /
extcrop / resize, checkpoint ``mapping_00229-model.pth.tar``) or 73 (+ the source's alignment
``(s, tx, ty)``, preprocess full / extfull, ``mapping_00109-model.pth.tar``), over a window of
27 frames centred on the output frame (so the caller adds 13 frames of delay).
Outputs: ``yaw``, ``pitch``, ``roll`` (B, 66) head-pose bin logits (see
``keypoints.degrees_from_bins``), ``t`` (B, 3) translation, ``exp`` (B, 45) keypoint offsets.

Conv1d(C -> 1024, k7) (27 -> 21) -> 3 x [out = Conv1d(k3, dilation 3)(LeakyReLU 0.1(out))
+ out[:, :, 3:-3]] (21 -> 15 -> 9 -> 3) -> mean over time -> five linear heads.
The same network serves 256 and 512 rendering (the mapping files are shared).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from msadtalker.catalog import mapping_network
from msadtalker.models.contract import ExportContract, TensorSpec

WINDOW = 27
DESCRIPTOR = 1024
NUM_BINS = 66
NUM_KP = 15
LAYERS = 3


class MappingOutput(NamedTuple):
    """Head-pose bin logits (B, 66) x 3, translation (B, 3), keypoint offsets (B, 45)."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


class MappingNet(nn.Module):
    """(B, C, 27) coefficient window -> MappingOutput; see the module docstring."""

    def __init__(self, coeff_nc: int = 70) -> None:
        super().__init__()
        mapping_network(coeff_nc)  # raises for a count no official mapping network takes
        self.coeff_nc = coeff_nc
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, DESCRIPTOR, kernel_size=7, bias=True))
        for i in range(LAYERS):
            self.add_module(
                f"encoder{i}",
                nn.Sequential(
                    nn.LeakyReLU(0.1),
                    nn.Conv1d(DESCRIPTOR, DESCRIPTOR, kernel_size=3, dilation=3),
                ),
            )
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.fc_roll = nn.Linear(DESCRIPTOR, NUM_BINS)
        self.fc_pitch = nn.Linear(DESCRIPTOR, NUM_BINS)
        self.fc_yaw = nn.Linear(DESCRIPTOR, NUM_BINS)
        self.fc_t = nn.Linear(DESCRIPTOR, 3)
        self.fc_exp = nn.Linear(DESCRIPTOR, 3 * NUM_KP)

    def forward(self, coeffs: torch.Tensor) -> MappingOutput:
        out = self.first(coeffs)
        for i in range(LAYERS):
            encoder = getattr(self, f"encoder{i}")
            # The residual is the un-activated input, cropped to the dilated conv's output.
            out = encoder(out) + out[:, :, 3:-3]
        feature = self.pooling(out).flatten(1)
        return MappingOutput(
            yaw=self.fc_yaw(feature),
            pitch=self.fc_pitch(feature),
            roll=self.fc_roll(feature),
            t=self.fc_t(feature),
            exp=self.fc_exp(feature),
        )

    def export_contract(self) -> ExportContract:
        batch = {0: "batch"}
        coeff_nc = self.coeff_nc
        return ExportContract(
            name=mapping_network(coeff_nc),
            inputs=(TensorSpec("coeffs", (2, coeff_nc, WINDOW), batch),),
            outputs=(
                TensorSpec("yaw", (2, NUM_BINS), batch),
                TensorSpec("pitch", (2, NUM_BINS), batch),
                TensorSpec("roll", (2, NUM_BINS), batch),
                TensorSpec("t", (2, 3), batch),
                TensorSpec("exp", (2, 3 * NUM_KP), batch),
            ),
            example_inputs=lambda: (
                torch.randn(2, coeff_nc, WINDOW, generator=torch.Generator().manual_seed(0)),
            ),
        )
