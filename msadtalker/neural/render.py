"""The generator side of the neural path: source encoding once, then one frame per call.

``NeuralRenderer(run, source, avatar)`` runs ``generator_source_encoder`` on the source crop
once (the (32, 16, S/4, S/4) feature volume and its dense-motion compression stay where the
engine keeps them, e.g. on the GPU) and ``render(kp_driving)`` runs ``generator_render``
with the source keypoints: (15, 3) driving keypoints -> (S, S, 3) uint8 RGB
(``rint(255 x)`` clipped, as upstream's ``img_as_ubyte``). ``render_full`` pastes the crop
back into the photo (``avatar.original``) with a feathered edge over the crop box, the
neural counterpart of the mesh renderer's "full" mode (upstream blends with Poisson
``seamlessClone``; the feather keeps the per-frame cost at a resize and a blend).

Stateless per frame, so sessions may share one renderer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from msadtalker.avatar.crop import paste_crop
from msadtalker.avatar.prepare import PreparedAvatar
from msadtalker.neural.runner import NetworkRunner
from msadtalker.neural.source import NeuralSource, image_tensor


def to_uint8(prediction: np.ndarray) -> np.ndarray:
    """(1, 3, S, S) or (3, S, S) float in [0, 1] -> (S, S, 3) uint8."""
    image = np.asarray(prediction, dtype=np.float32).reshape(3, *prediction.shape[-2:])
    scaled = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(scaled.transpose(1, 2, 0))


class NeuralRenderer:
    def __init__(self, run: NetworkRunner, source: NeuralSource, avatar: PreparedAvatar) -> None:
        self._run = run
        self.source = source
        self.avatar = avatar
        encoded = run("generator_source_encoder", image_tensor(source.image), keep_on_device=True)
        self._volume: Any = encoded["source_volume"]
        self._compressed: Any = encoded["source_compressed"]
        self._kp_source = np.asarray(source.kp_source, dtype=np.float32)[None]

    @property
    def size(self) -> int:
        return self.source.size

    @property
    def full_size(self) -> tuple[int, int]:
        """(width, height) of ``render_full`` frames."""
        height, width = self.avatar.original.shape[:2]
        return width, height

    def render(self, kp_driving: np.ndarray) -> np.ndarray:
        kp = np.asarray(kp_driving, dtype=np.float32).reshape(1, -1, 3)
        out = self._run("generator_render", self._volume, self._compressed, self._kp_source, kp)
        return to_uint8(np.asarray(out["prediction"]))

    def render_full(self, kp_driving: np.ndarray) -> np.ndarray:
        crop = self.render(kp_driving)
        return paste_crop(self.avatar.original, crop, self.avatar.box)
