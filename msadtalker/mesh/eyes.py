"""Shadow in the closing eye slit.

The rig's blink slides the photo's upper lid down over the eye; what is left between the lids
is the photo's eye squeezed into a slit, whose white makes a bright line that a real closing
eye does not show (the lid and lashes shade it). The slit (the deformed lid-margin polygon,
anti-aliased) is therefore darkened toward the photo's lash colour as the blink deepens; when
the lids meet this also covers the sub-pixel slivers where the two lid contours' polylines
do not coincide exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from msadtalker.avatar import topology as tp

_EYES = (
    (tp.RIGHT_EYE_UPPER0, tp.RIGHT_EYE_LOWER0),
    (tp.LEFT_EYE_UPPER0, tp.LEFT_EYE_LOWER0),
)


def lash_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(3,) float32: a dark colour from inside the photo's eyes (lashes, pupil)."""
    mask = np.zeros(image.shape[:2], np.uint8)
    for upper, lower in _EYES:
        poly = np.concatenate([landmarks[list(upper), :2], landmarks[list(lower[-2:0:-1]), :2]])
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    pixels = image[mask > 0].astype(np.float32)
    if len(pixels) < 8:
        return np.array([40.0, 30.0, 28.0], np.float32)
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    dark = pixels[luma <= np.percentile(luma, 10)]
    colour: np.ndarray = np.clip(dark.mean(axis=0), 8.0, 120.0).astype(np.float32)
    return colour


def shade_slits(
    out: np.ndarray, q: np.ndarray, blink: float, lash: np.ndarray, softness: float
) -> None:
    """Darken the eye slits in ``out`` (H, W, 3) uint8 in place, by ``blink`` in [0, 1];
    ``softness``: blur of the shade in pixels (matches the photo's scale)."""
    strength = 0.6 * float(np.clip((blink - 0.3) / 0.7, 0.0, 1.0)) ** 1.5
    if strength <= 0.0:
        return
    h, w = out.shape[:2]
    for upper, lower in _EYES:
        poly = np.concatenate([q[list(upper)], q[list(lower[-2:0:-1])]])
        x0 = max(int(np.floor(poly[:, 0].min())) - 2, 0)
        y0 = max(int(np.floor(poly[:, 1].min())) - 2, 0)
        x1 = min(int(np.ceil(poly[:, 0].max())) + 3, w)
        y1 = min(int(np.ceil(poly[:, 1].max())) + 3, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        fixed = np.round((poly - [x0, y0]) * 16.0).astype(np.int32)
        cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=4)
        # A polygon collapsed to a line still gets its anti-aliased outline: a lash line.
        cv2.polylines(mask, [fixed], True, 255, lineType=cv2.LINE_AA, shift=4)
        alpha = mask.astype(np.float32) * (strength / 255.0)
        if softness > 0.3:
            alpha = cv2.GaussianBlur(alpha, (0, 0), softness)
        region = out[y0:y1, x0:x1].astype(np.float32)
        region += (lash[None, None, :] - region) * alpha[:, :, None]
        out[y0:y1, x0:x1] = np.clip(region + 0.5, 0.0, 255.0).astype(np.uint8)
