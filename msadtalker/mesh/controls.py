"""What drives one frame of the mesh renderer, and the head rotation's sign conventions.

Camera frame (the image's): x to the right, y DOWN, z AWAY from the viewer (right-handed; the
same axes as MediaPipe's landmarks, whose z is smaller for points closer to the camera).

* ``roll`` > 0: the head turns COUNTER-CLOCKWISE as the viewer sees it (the top of the head
  moves toward the image's left, i.e. toward the subject's right shoulder).
* ``yaw`` > 0: the face turns toward the VIEWER'S RIGHT (the nose moves right in the image;
  the subject turns to their own left).
* ``pitch`` > 0: the head nods DOWN (the nose and chin move down in the image).

All three are offsets in degrees from the pose in the photo. SadTalker's keypoint transform
(official: OpenTalker/SadTalker ``src/facerender/modules/make_animation.py``,
``get_rotation_matrix``) uses ``Rz = [[c, -s], [s, c]]`` on y-down keypoints, i.e. its positive
roll is clockwise on screen: negate roll when feeding SadTalker angles to this renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Controls outside these ranges are clamped: the warp is built for head-motion amplitudes of
# about +-10 degrees and stays fold-free up to about twice that.
MAX_ANGLE_DEG = 20.0


@dataclass(frozen=True, slots=True)
class FaceControls:
    """One frame's controls. Angles in degrees (see module docstring for signs);
    ``mouth_open`` in [0, 1] (jaw drop, 1 = wide open); ``mouth_wide`` in [-1, 1] (spread
    > 0, rounded < 0); ``blink`` in [0, 1] (eyelid closure, 1 = closed); ``gaze_x`` /
    ``gaze_y`` in [-1, 1] (the eyes look to the viewer's right / down, as a share of the
    largest shift the rig allows; 0 = the photo's own gaze)."""

    pitch: float = 0.0
    yaw: float = 0.0
    roll: float = 0.0
    mouth_open: float = 0.0
    mouth_wide: float = 0.0
    blink: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    def clamped(self) -> FaceControls:
        a = MAX_ANGLE_DEG

        def clip(v: float, lo: float, hi: float) -> float:
            v = float(v)
            if math.isnan(v):
                return 0.0
            return min(max(v, lo), hi)

        return FaceControls(
            clip(self.pitch, -a, a),
            clip(self.yaw, -a, a),
            clip(self.roll, -a, a),
            clip(self.mouth_open, 0.0, 1.0),
            clip(self.mouth_wide, -1.0, 1.0),
            clip(self.blink, 0.0, 1.0),
            clip(self.gaze_x, -1.0, 1.0),
            clip(self.gaze_y, -1.0, 1.0),
        )

    @property
    def is_rest(self) -> bool:
        return not any(
            (
                self.pitch,
                self.yaw,
                self.roll,
                self.mouth_open,
                self.mouth_wide,
                self.blink,
                self.gaze_x,
                self.gaze_y,
            )
        )


def rotation_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3 x 3 rotation (degrees in, conventions of the module docstring), applied as
    ``R @ (p - pivot) + pivot`` to column vectors; yaw first, then pitch, then roll."""
    p, y, r = (math.radians(v) for v in (pitch, yaw, roll))
    cy, sy = math.cos(y), math.sin(y)
    cp, sp = math.cos(p), math.sin(p)
    cr, sr = math.cos(r), math.sin(r)
    # yaw about the vertical axis: nose (z < 0 relative to the pivot) moves to +x
    ry = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    # pitch about the horizontal axis: nose moves to +y (down)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    # roll in the image plane: counter-clockwise on screen with y pointing down
    rz = np.array([[cr, sr, 0.0], [-sr, cr, 0.0], [0.0, 0.0, 1.0]])
    rotation: np.ndarray = rz @ rx @ ry
    return rotation
