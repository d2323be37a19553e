"""ExpNet (SadTalker audio2exp, the SimpleWrapperV2 path; official: OpenTalker/SadTalker
``src/audio2exp_models/networks.py``, run by ``src/audio2exp_models/audio2exp.py``).

Per video frame: ``mel`` (B, 1, 80, 16) window in [-4, 4], ``ref_exp`` (B, 64) the source
image's 3DMM expression, ``blink_ratio`` (B, 1) eye-blink control in [0, 1]
-> ``exp`` (B, 64) 3DMM expression coefficients of that frame.

``exp = Linear(577 -> 64)([audio 512 | ref_exp 64 | blink_ratio 1])``; the output is the
expression itself (no residual to ``ref_exp``). Frames are independent: the official code runs
chunks of 10 frames, any batch size gives the same numbers. No delay, no state.
"""

from __future__ import annotations

import torch
from torch import nn

from msadtalker.models.audio_encoder import AUDIO_FEATURES, AudioEncoder
from msadtalker.models.contract import ExportContract, TensorSpec

EXP_DIM = 64
MEL_BINS = 80
MEL_WINDOW = 16
EXAMPLE_BATCH = 10  # the official chunk size


class ExpNet(nn.Module):
    """(mel (B,1,80,16), ref_exp (B,64), blink_ratio (B,1)) -> exp (B,64)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = AudioEncoder()
        self.mapping1 = nn.Linear(AUDIO_FEATURES + EXP_DIM + 1, EXP_DIM)

    def forward(
        self, mel: torch.Tensor, ref_exp: torch.Tensor, blink_ratio: torch.Tensor
    ) -> torch.Tensor:
        audio = self.audio_encoder(mel).flatten(1)
        exp: torch.Tensor = self.mapping1(torch.cat((audio, ref_exp, blink_ratio), dim=1))
        return exp

    @staticmethod
    def export_contract() -> ExportContract:
        batch = {0: "batch"}
        return ExportContract(
            name="expnet",
            inputs=(
                TensorSpec("mel", (EXAMPLE_BATCH, 1, MEL_BINS, MEL_WINDOW), batch),
                TensorSpec("ref_exp", (EXAMPLE_BATCH, EXP_DIM), batch),
                TensorSpec("blink_ratio", (EXAMPLE_BATCH, 1), batch),
            ),
            outputs=(TensorSpec("exp", (EXAMPLE_BATCH, EXP_DIM), batch),),
            example_inputs=_example_inputs,
        )


def _example_inputs() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    mel = torch.rand(EXAMPLE_BATCH, 1, MEL_BINS, MEL_WINDOW, generator=generator) * 8 - 4
    ref_exp = torch.randn(EXAMPLE_BATCH, EXP_DIM, generator=generator)
    blink_ratio = torch.rand(EXAMPLE_BATCH, 1, generator=generator)
    return mel, ref_exp, blink_ratio
