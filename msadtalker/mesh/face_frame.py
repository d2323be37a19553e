"""Face-aligned axes shared by the rig and its expression bases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaceFrame:
    """Face-aligned axes: ``e`` along the eye line (image left -> right), ``down``
    perpendicular to it toward the chin; ``origin`` between the eyes."""

    origin: np.ndarray
    e: np.ndarray
    down: np.ndarray

    def uv(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = xy - self.origin
        return d @ self.e, d @ self.down

    def xy(self, u: np.ndarray, s: np.ndarray) -> np.ndarray:
        return self.origin + np.outer(u, self.e) + np.outer(s, self.down)
