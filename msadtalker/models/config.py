"""Render-size configurations of the SadTalker networks.

The networks are identical at 256 and 512: same modules, same keys and shapes (all renderer
networks are fully convolutional and upstream uses the same facerender*.yaml for both). What
changes with the size S is the checkpoint file (trained values differ), the feature-map size
S / 4 of KPDetector and the generator (64 or 128; a 512 frame costs ~4x the compute and
activations) and the output frame size. ExpNet, MappingNet and the face-recon net do not depend
on S; the mapping files are shared by both sizes. (Official: OpenTalker/SadTalker
``src/config/facerender.yaml``, one configuration for both sizes.)
"""

from __future__ import annotations

from dataclasses import dataclass

from msadtalker.catalog import RENDER_SIZES, safetensors_file

NUM_KP = 15
VOLUME_DEPTH = 16


@dataclass(frozen=True)
class RenderConfig:
    """Everything that depends on the render size S."""

    size: int

    @property
    def safetensors_file(self) -> str:
        return safetensors_file(self.size)

    @property
    def feature_size(self) -> int:
        """Side of the KPDetector / generator feature maps (S / 4)."""
        return self.size // 4

    @property
    def motion_volume(self) -> tuple[int, int, int]:
        """(depth, height, width) of the keypoint heat volumes and the dense motion."""
        return (VOLUME_DEPTH, self.feature_size, self.feature_size)


RENDER_CONFIGS = {size: RenderConfig(size) for size in RENDER_SIZES}


def render_config(size: int) -> RenderConfig:
    try:
        return RENDER_CONFIGS[size]
    except KeyError:
        choices = sorted(RENDER_CONFIGS)
        raise ValueError(f"unsupported render size {size}: choose one of {choices}") from None
