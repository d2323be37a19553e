"""OcclusionAwareSPADEGenerator: SadTalker's face-vid2vid renderer (official: OpenTalker/SadTalker
``src/facerender/modules/generator.py``).

Inputs: ``source_image`` (B, 3, S, S) RGB in [0, 1]; ``kp_source`` and ``kp_driving`` (B, 15, 3)
keypoints in [-1, 1]. Output :class:`GeneratorOutput`: the rendered frame (B, 3, S, S) in [0, 1]
plus the dense-motion by-products. One output frame per call, no frame delay.

The work splits in two:

* :meth:`OcclusionAwareSPADEGenerator.encode_source` - depends only on the source image, so a
  live pipeline runs it once per avatar: 2-D encoder (S -> S/4) -> 1x1 conv to 512 channels
  viewed as a (32, 16, S/4, S/4) volume -> 6 ResBlock3d; plus the dense-motion compression of
  that volume to 4 channels.
* :meth:`OcclusionAwareSPADEGenerator.render` - per frame: dense motion from the keypoints,
  trilinear warp of the volume, back to 512 -> 256 channels (``third``, ``fourth``), times the
  occlusion map, SPADE decoder.

``forward`` = both. Sizes: S = 256 gives 64^2 feature maps, S = 512 gives 128^2; the weights are
the same for both (fully convolutional; S must be a multiple of 128). Modules are built in eval
mode (BatchNorm uses the stored statistics). Export: the two 5-D ``grid_sample`` calls need ONNX
opset >= 20; :class:`SourceEncoder` and :class:`FrameRenderer` are the export views of the split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from msadtalker.models.blocks import DownBlock2d, ResBlock3d, SameBlock2d
from msadtalker.models.contract import ExportContract, TensorSpec
from msadtalker.models.dense_motion import NUM_KP, NUM_MOTIONS, DenseMotionNetwork
from msadtalker.models.spade import SPADEDecoder
from msadtalker.models.volume_sampling import VolumeSampler, trilinear_sample

_VOLUME_CHANNELS = 32
_VOLUME_DEPTH = 16
_NUM_RESBLOCKS = 6


class SourceFeatures(NamedTuple):
    """Per-avatar generator state from :meth:`OcclusionAwareSPADEGenerator.encode_source`.

    volume (B, 32, 16, S/4, S/4): source feature volume after the 3-D residual blocks.
    compressed (B, 4, 16, S/4, S/4): its dense-motion compression (Conv3d 1x1 -> BN -> ReLU).
    """

    volume: torch.Tensor
    compressed: torch.Tensor


class GeneratorOutput(NamedTuple):
    """prediction (B, 3, S, S) in [0, 1]; mask (B, 16, 16, S/4, S/4) softmax before the 1e-3
    zeroing; occlusion_map (B, 1, S/4, S/4); deformation (B, 16, S/4, S/4, 3) sampling grid."""

    prediction: torch.Tensor
    mask: torch.Tensor
    occlusion_map: torch.Tensor
    deformation: torch.Tensor


class OcclusionAwareSPADEGenerator(nn.Module):
    """Source image + source/driving keypoints -> rendered frame; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.first = SameBlock2d(3, 64)
        self.down_blocks = nn.ModuleList([DownBlock2d(64, 128), DownBlock2d(128, 256)])
        self.second = nn.Conv2d(256, _VOLUME_CHANNELS * _VOLUME_DEPTH, 1)
        self.resblocks_3d = nn.Sequential()
        for i in range(_NUM_RESBLOCKS):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(_VOLUME_CHANNELS))
        self.dense_motion_network = DenseMotionNetwork()
        self.third = SameBlock2d(_VOLUME_CHANNELS * _VOLUME_DEPTH, 256, leaky=True)
        self.fourth = nn.Conv2d(256, 256, 1)
        self.decoder = SPADEDecoder(in_ch=256, out_ch=64)
        # the warp; export may swap in the 2-D form (msadtalker.models.volume_sampling)
        self.sample_volume: VolumeSampler = trilinear_sample
        self.eval()

    def encode_source(self, source_image: torch.Tensor) -> SourceFeatures:
        """(B, 3, S, S) -> :class:`SourceFeatures` (computed once per avatar)."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        # channel index c * 16 + d -> (channel c, depth d)
        volume = self.second(out).unflatten(1, (_VOLUME_CHANNELS, _VOLUME_DEPTH))
        volume = self.resblocks_3d(volume)
        return SourceFeatures(volume, self.dense_motion_network.compress_volume(volume))

    def render(
        self, source: SourceFeatures, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> GeneratorOutput:
        """Per-frame part. ``source`` may have batch 1 and be shared by B keypoint pairs."""
        motion = self.dense_motion_network.from_compressed(source.compressed, kp_source, kp_driving)
        volume = source.volume.expand(kp_driving.shape[0], -1, -1, -1, -1)
        # 5-D "bilinear" is trilinear; align_corners=False as upstream (grid spans [-1, 1]).
        warped = self.sample_volume(volume, motion.deformation)
        out = self.fourth(self.third(warped.flatten(1, 2)))
        prediction = self.decoder(out * motion.occlusion_map)
        return GeneratorOutput(
            prediction=prediction,
            mask=motion.mask,
            occlusion_map=motion.occlusion_map,
            deformation=motion.deformation,
        )

    def forward(
        self, source_image: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> GeneratorOutput:
        return self.render(self.encode_source(source_image), kp_source, kp_driving)

    @staticmethod
    def export_contract(size: int = 256) -> ExportContract:
        """Whole generator (offline use): outputs in :class:`GeneratorOutput` order."""
        s4 = size // 4
        batch = {0: "batch"}

        def examples() -> tuple[torch.Tensor, ...]:
            kp_source = _example_keypoints()
            return torch.rand(1, 3, size, size), kp_source, _perturbed(kp_source)

        return ExportContract(
            name="generator",
            inputs=(
                TensorSpec("source_image", (1, 3, size, size), batch),
                TensorSpec("kp_source", (1, NUM_KP, 3), batch),
                TensorSpec("kp_driving", (1, NUM_KP, 3), batch),
            ),
            outputs=(
                TensorSpec("prediction", (1, 3, size, size), batch),
                TensorSpec("mask", (1, NUM_MOTIONS, _VOLUME_DEPTH, s4, s4), batch),
                TensorSpec("occlusion_map", (1, 1, s4, s4), batch),
                TensorSpec("deformation", (1, _VOLUME_DEPTH, s4, s4, 3), batch),
            ),
            example_inputs=examples,
        )


def _example_keypoints() -> torch.Tensor:
    """Keypoints in the range the mapping network produces (about [-0.8, 0.8])."""
    return torch.rand(1, NUM_KP, 3) * 1.6 - 0.8


def _perturbed(keypoints: torch.Tensor) -> torch.Tensor:
    return keypoints + 0.05 * torch.randn_like(keypoints)


class SourceEncoder(nn.Module):
    """Export view of :meth:`OcclusionAwareSPADEGenerator.encode_source` (shares its weights).

    image (B, 3, S, S) -> (volume (B, 32, 16, S/4, S/4), compressed (B, 4, 16, S/4, S/4)).
    """

    def __init__(self, generator: OcclusionAwareSPADEGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, source_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.generator.encode_source(source_image)
        return features.volume, features.compressed

    @staticmethod
    def export_contract(size: int = 256) -> ExportContract:
        s4 = size // 4
        batch = {0: "batch"}
        return ExportContract(
            name="generator_source_encoder",
            inputs=(TensorSpec("source_image", (1, 3, size, size), batch),),
            outputs=(
                TensorSpec("source_volume", (1, _VOLUME_CHANNELS, _VOLUME_DEPTH, s4, s4), batch),
                TensorSpec("source_compressed", (1, 4, _VOLUME_DEPTH, s4, s4), batch),
            ),
            example_inputs=lambda: (torch.rand(1, 3, size, size),),
        )


class FrameRenderer(nn.Module):
    """Export view of :meth:`OcclusionAwareSPADEGenerator.render`: the per-frame graph.

    (source_volume, source_compressed, kp_source, kp_driving) -> prediction (B, 3, S, S).
    Only the image is an output: the motion by-products are large and unused downstream.
    """

    def __init__(self, generator: OcclusionAwareSPADEGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(
        self,
        source_volume: torch.Tensor,
        source_compressed: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
    ) -> torch.Tensor:
        source = SourceFeatures(source_volume, source_compressed)
        return self.generator.render(source, kp_source, kp_driving).prediction

    @staticmethod
    def export_contract(size: int = 256) -> ExportContract:
        s4 = size // 4
        batch = {0: "batch"}
        volume_shape = (1, _VOLUME_CHANNELS, _VOLUME_DEPTH, s4, s4)
        compressed_shape = (1, 4, _VOLUME_DEPTH, s4, s4)

        def examples() -> tuple[torch.Tensor, ...]:
            kp_source = _example_keypoints()
            kp_driving = _perturbed(kp_source)
            return (
                torch.randn(volume_shape),
                torch.rand(compressed_shape),
                kp_source,
                kp_driving,
            )

        return ExportContract(
            name="generator_render",
            inputs=(
                TensorSpec("source_volume", volume_shape, batch),
                TensorSpec("source_compressed", compressed_shape, batch),
                TensorSpec("kp_source", (1, NUM_KP, 3), batch),
                TensorSpec("kp_driving", (1, NUM_KP, 3), batch),
            ),
            outputs=(TensorSpec("prediction", (1, 3, size, size), batch),),
            example_inputs=examples,
        )
