"""Finding every face in a picture: detector boxes verified and refined by the landmarker.

The detector alone produces occasional false boxes on busy pictures (clothing patterns, posters
at low resolution); each box is therefore run through the landmark model, kept only if the
landmarker's own face-presence score agrees, and described by its 468 landmarks. Pictures in
which the whole-image pass finds nothing are searched again on overlapping tiles, which finds
faces that are small relative to the picture (group photos, wide shots).

Faces are returned LEFT TO RIGHT (by the centre of their landmarks), the order that
``face_index`` refers to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from msadtalker.avatar.detector import FaceBox, FaceDetector
from msadtalker.avatar.landmarks import PRESENCE_THRESHOLD, FaceLandmarker

log = logging.getLogger(__name__)

DUPLICATE_IOU = 0.3


@dataclass(frozen=True)
class Face:
    landmarks: np.ndarray  # (468, 3) float32, image pixels
    score: float  # detector confidence
    presence: float  # landmarker face-presence probability

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        lo = self.landmarks[:, :2].min(axis=0)
        hi = self.landmarks[:, :2].max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return (x1 - x0) * (y1 - y0)


class FaceFinder:
    """Detector + landmarker, built once (model loading costs ~10 ms)."""

    def __init__(self, num_threads: int = 1) -> None:
        self.detector = FaceDetector(num_threads)
        self.landmarker = FaceLandmarker(num_threads)

    def find(self, rgb: np.ndarray) -> list[Face]:
        faces = self._verify(rgb, self.detector.detect(rgb))
        if not faces:
            faces = self._verify(rgb, self._tiled(rgb))
        faces.sort(key=lambda f: float(f.landmarks[:, 0].mean()))
        return faces

    def _tiled(self, rgb: np.ndarray) -> list[FaceBox]:
        h, w = rgb.shape[:2]
        boxes: list[FaceBox] = []
        for grid in (2, 3):
            side = int(min(h, w) * 2 / (grid + 1))
            if side < 96:
                break
            ys = np.linspace(0, h - side, grid + (h > w)).round().astype(int)
            xs = np.linspace(0, w - side, grid + (w > h)).round().astype(int)
            for y in ys:
                for x in xs:
                    for f in self.detector.detect(rgb[y : y + side, x : x + side]):
                        boxes.append(
                            FaceBox(
                                f.x0 + x,
                                f.y0 + y,
                                f.x1 + x,
                                f.y1 + y,
                                (f.eye_left[0] + x, f.eye_left[1] + y),
                                (f.eye_right[0] + x, f.eye_right[1] + y),
                                f.score,
                            )
                        )
            if boxes:
                break
        return boxes

    def _verify(self, rgb: np.ndarray, boxes: list[FaceBox]) -> list[Face]:
        faces: list[Face] = []
        for box in sorted(boxes, key=lambda b: -b.score):
            result = self.landmarker.locate(rgb, box)
            if result.presence < PRESENCE_THRESHOLD:
                log.debug(
                    "dropped a detector box at %s (landmarker presence %.2f)",
                    box.centre,
                    result.presence,
                )
                continue
            face = Face(result.points, box.score, result.presence)
            if any(_iou(face.bbox, other.bbox) > DUPLICATE_IOU for other in faces):
                continue
            faces.append(face)
        return faces


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
