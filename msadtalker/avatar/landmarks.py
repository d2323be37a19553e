"""Dense face landmarks: MediaPipe Face Mesh (468 points with depth), pre/post-processed here.

Why this model: it gives 468 points *with z* (relative depth on the same pixel scale as x),
which the mesh renderer needs to rotate the head in 3-D and to build a dense triangulated
mesh; it runs in ~2 ms per face on one CPU core through LiteRT; and its weights (2.4 MB,
Apache-2.0) ship inside this package, so preparation works offline with no download and no
GPU. (68-point detectors give no depth and a far coarser mesh.)

Model I/O: input (1, 192, 192, 3) float RGB in [0, 1], a square region of interest (ROI)
around the face rotated so that the eyes are level; outputs (1, 1, 1, 1404) = 468 x (x, y, z)
in input-tensor pixels and (1, 1, 1, 1) a face-presence logit. The ROI is 1.5x the detector
box (its long side), then refined once from the first landmarks, as MediaPipe's own graph
tracks it from frame to frame.

Coordinates returned: image pixels, pixel-centre convention (pixel (r, c) has its centre at
x = c, y = r); z in pixels on x's scale, smaller = closer to the camera (MediaPipe's sign),
zero near the face's centre of mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from msadtalker.avatar.detector import FaceBox
from msadtalker.avatar.tflite import load_interpreter
from msadtalker.avatar.topology import NUM_LANDMARKS, eye_centres

MODEL = Path(__file__).resolve().parent / "models" / "face_landmark.tflite"
INPUT = 192
ROI_SCALE = 1.5
PRESENCE_THRESHOLD = 0.5


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels (edge convention centre), rotation in radians."""

    cx: float
    cy: float
    side: float
    angle: float

    def tensor_to_image(self) -> np.ndarray:
        """2 x 3 affine: tensor edge coordinates (0..192) -> image edge coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.side / INPUT
        return np.array(
            [
                [c * k, -s * k, self.cx - (c - s) * self.side / 2.0],
                [s * k, c * k, self.cy - (s + c) * self.side / 2.0],
            ]
        )


@dataclass(frozen=True)
class FaceLandmarks:
    points: np.ndarray  # (468, 3) float32, image pixels (see module docstring)
    presence: float  # face-presence probability of the last pass


def roi_from_box(face: FaceBox) -> Roi:
    (lx, ly), (rx, ry) = face.eye_left, face.eye_right
    angle = math.atan2(ry - ly, rx - lx)
    cx, cy = face.centre
    return Roi(cx + 0.5, cy + 0.5, max(face.width, face.height) * ROI_SCALE, angle)


def roi_from_points(points: np.ndarray) -> Roi:
    left, right = eye_centres(points)
    angle = math.atan2(right[1] - left[1], right[0] - left[0])
    c, s = math.cos(angle), math.sin(angle)
    xy = points[:, :2] + 0.5
    # Extent in the face-aligned frame, so the ROI hugs the face whatever its tilt.
    u = xy[:, 0] * c + xy[:, 1] * s
    v = -xy[:, 0] * s + xy[:, 1] * c
    uc, vc = (u.min() + u.max()) / 2.0, (v.min() + v.max()) / 2.0
    side = max(u.max() - u.min(), v.max() - v.min()) * ROI_SCALE
    return Roi(uc * c - vc * s, uc * s + vc * c, side, angle)


class FaceLandmarker:
    """``locate(rgb, face)`` -> 468 landmarks of the face the detector box points at."""

    def __init__(self, num_threads: int = 1) -> None:
        self._interpreter = load_interpreter(MODEL, num_threads)
        outputs = self._interpreter.get_output_details()
        self._points = next(o["index"] for o in outputs if o["shape"][-1] == NUM_LANDMARKS * 3)
        self._flag = next(o["index"] for o in outputs if o["shape"][-1] == 1)
        self._input = self._interpreter.get_input_details()[0]["index"]

    def run_roi(self, rgb: np.ndarray, roi: Roi) -> FaceLandmarks:
        """One pass of the model on ``roi``."""
        image, shrink = _shrunk_for(rgb, roi.side)
        m = roi.tensor_to_image()
        # Tensor pixel centre t -> edge t + 0.5 -> image edge -> (shrunk) image pixel centre.
        m_in = m.copy()
        m_in[:, 2] += m[:, :2] @ np.array([0.5, 0.5])
        m_in /= shrink
        m_in[:, 2] -= 0.5
        tensor = cv2.warpAffine(
            image,
            m_in,
            (INPUT, INPUT),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        self._interpreter.set_tensor(self._input, tensor.astype(np.float32)[None] / 255.0)
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._points).reshape(NUM_LANDMARKS, 3)
        logit = float(self._interpreter.get_tensor(self._flag).ravel()[0])
        presence = 1.0 / (1.0 + math.exp(-max(min(logit, 80.0), -80.0)))
        xy = raw[:, :2] @ m[:, :2].T + m[:, 2] - 0.5
        z = raw[:, 2] * (roi.side / INPUT)
        points = np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)
        return FaceLandmarks(points, presence)

    def locate(self, rgb: np.ndarray, face: FaceBox, refine: int = 1) -> FaceLandmarks:
        """Landmarks from a detector box, with ``refine`` extra passes on a landmark ROI."""
        result = self.run_roi(rgb, roi_from_box(face))
        for _ in range(refine):
            if result.presence < PRESENCE_THRESHOLD:
                break
            result = self.run_roi(rgb, roi_from_points(result.points))
        return result


def _shrunk_for(rgb: np.ndarray, side: float) -> tuple[np.ndarray, float]:
    """Area-downscale so the ROI is at most ~2x the input size (avoids aliasing)."""
    shrink = side / (2.0 * INPUT)
    if shrink <= 1.0:
        return rgb, 1.0
    h, w = rgb.shape[:2]
    size = (max(1, round(w / shrink)), max(1, round(h / shrink)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), w / size[0]
