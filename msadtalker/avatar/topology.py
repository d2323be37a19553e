"""Named landmark groups of MediaPipe's 468-point face mesh.

Index lists as published with the mesh model (MediaPipe / TF.js facemesh annotations,
Apache-2.0). "Right"/"left" are the SUBJECT's sides, so ``RIGHT_EYE_*`` is the eye on the
image's left in an unmirrored photo. Contours run from one corner to the other.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 468

SILHOUETTE = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288,
    397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
    172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

# Lips, mouth corner to mouth corner (image left -> image right).
LIPS_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)  # outer corners, as the 68-point layout's points 48 and 54
INNER_MOUTH_CORNERS = (78, 308)

# Eyes: lid contour at the lash line, corner to corner. Rings 1/2 lie further out.
RIGHT_EYE_UPPER0 = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER0 = (33, 7, 163, 144, 145, 153, 154, 155, 133)
RIGHT_EYE_UPPER1 = (247, 30, 29, 27, 28, 56, 190)
RIGHT_EYE_LOWER1 = (130, 25, 110, 24, 23, 22, 26, 112, 243)
RIGHT_EYE_UPPER2 = (113, 225, 224, 223, 222, 221, 189)
RIGHT_EYEBROW_LOWER = (35, 124, 46, 53, 52, 65)
LEFT_EYE_UPPER0 = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER0 = (263, 249, 390, 373, 374, 380, 381, 382, 362)
LEFT_EYE_UPPER1 = (467, 260, 259, 257, 258, 286, 414)
LEFT_EYE_LOWER1 = (359, 255, 339, 254, 253, 252, 256, 341, 463)
LEFT_EYE_UPPER2 = (342, 445, 444, 443, 442, 441, 413)
LEFT_EYEBROW_LOWER = (265, 353, 276, 283, 282, 295)

NOSE_TIP = 1
NOSE_BOTTOM = 2
FOREHEAD_TOP = 10
CHIN = 152
CHEEK_EXTREMES = (234, 454)  # silhouette points at the cheekbones (image left, image right)


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres: mean of each lid contour, x/y only.

    These play the part of the 68-point layout's ``mean(lm[36:42])`` / ``mean(lm[42:48])``.
    """
    right = np.unique(np.array(RIGHT_EYE_UPPER0 + RIGHT_EYE_LOWER0))
    left = np.unique(np.array(LEFT_EYE_UPPER0 + LEFT_EYE_LOWER0))
    return landmarks[right, :2].mean(axis=0), landmarks[left, :2].mean(axis=0)


def mouth_centre(landmarks: np.ndarray) -> np.ndarray:
    """Midpoint of the outer mouth corners (the 68-point layout's ``(lm[48] + lm[54]) / 2``)."""
    centre: np.ndarray = landmarks[list(MOUTH_CORNERS), :2].mean(axis=0)
    return centre


def eye_aspect_ratio(landmarks: np.ndarray) -> tuple[float, float]:
    """Lid opening / eye width of (image-left, image-right) eye.

    The opening is measured along the eye's own vertical axis (perpendicular to the line
    between its corners): at each upper-lid point, the distance down to the lower lid
    interpolated at the same position across the eye; the mean over the middle points.
    """
    out = []
    for upper, lower in ((RIGHT_EYE_UPPER0, RIGHT_EYE_LOWER0), (LEFT_EYE_UPPER0, LEFT_EYE_LOWER0)):
        a, b = landmarks[upper[0], :2], landmarks[upper[-1], :2]
        width = max(float(np.hypot(*(b - a))), 1e-6)
        e = (b - a) / width
        down = np.array([-e[1], e[0]])
        up, lo = landmarks[list(upper), :2] - a, landmarks[list(lower), :2] - a
        lo_u, lo_s = lo @ e, lo @ down
        order = np.argsort(lo_u)
        mid = up[2:-2]
        gap = np.interp(mid @ e, lo_u[order], lo_s[order]) - mid @ down
        out.append(float(np.maximum(gap, 0.0).mean()) / width)
    return out[0], out[1]


def lip_gap(landmarks: np.ndarray) -> float:
    """Mean distance between the inner upper and inner lower lip (middle points), pixels."""
    up = landmarks[list(LIPS_UPPER_INNER[3:-3]), :2]
    lo = landmarks[list(LIPS_LOWER_INNER[3:-3]), :2]
    return float(np.linalg.norm(up - lo, axis=1).mean())
