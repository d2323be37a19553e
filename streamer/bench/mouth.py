"""Reading the mouth off a rendered or received picture, for any renderer and avatar.

``MouthProbe.from_render_stage`` renders the avatar at rest twice, mouth closed and mouth
fully open (same pose, eyes open), and keeps the pixels that differ: that is where the mouth
is. ``openness(image)`` then says how far a picture has moved from the closed mouth toward
the open one inside that mask (0 closed .. 1 open), robust to video compression. Used by the
latency bench (when did the mouth open on the receiver?) and the end-to-end tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streamer.at_rest import rest_motion

__all__ = ["MouthProbe", "rest_motion"]


@dataclass(frozen=True)
class MouthProbe:
    closed: np.ndarray  # (H, W, 3) float32, mouth closed
    direction: np.ndarray  # (N, 3) float32: open - closed at the mask's pixels
    mask: np.ndarray  # (H, W) bool

    @classmethod
    def from_render_stage(cls, stage: Any, threshold: float = 24.0) -> MouthProbe:
        """``stage``: a fresh render stage (MotionFrame -> VideoFrame, delay 0)."""
        (closed,) = stage.push(rest_motion(0.0, index=0))
        (opened,) = stage.push(rest_motion(1.0, index=1))
        return cls.from_images(closed.image, opened.image, threshold)

    @classmethod
    def from_images(
        cls, closed: np.ndarray, opened: np.ndarray, threshold: float = 24.0
    ) -> MouthProbe:
        c = closed.astype(np.float32)
        o = opened.astype(np.float32)
        mask = np.abs(o - c).sum(axis=2) > threshold
        if mask.sum() < 4:
            raise ValueError("the renderer draws no visible difference for an open mouth")
        return cls(closed=c, direction=(o - c)[mask], mask=mask)

    @property
    def size(self) -> tuple[int, int]:
        return self.closed.shape[1], self.closed.shape[0]

    def openness(self, image: np.ndarray) -> float:
        """Projection of the picture's change (in the mouth mask) on closed -> open."""
        if image.shape[:2] != self.closed.shape[:2]:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        delta = image.astype(np.float32)[self.mask] - self.closed[self.mask]
        d = self.direction
        return float((delta * d).sum() / max(float((d * d).sum()), 1e-6))
