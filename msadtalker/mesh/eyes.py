"""The eyes beyond the rig's lids: shadow in the closing slit, and where they look.

The rig's blink slides the photo's upper lid down over the eye; what is left between the lids
is the photo's eye squeezed into a slit, whose white makes a bright line that a real closing
eye does not show (the lid and lashes shade it). The slit (the deformed lid-margin polygon,
anti-aliased) is therefore darkened toward the photo's lash colour as the blink deepens; when
the lids meet this also covers the sub-pixel slivers where the two lid contours' polylines
do not coincide exactly.

Gaze (``shift_gaze``): the eye's content (iris, pupil, the eye white around them) is moved
inside the lid opening by offsetting the backward map there, by ``GAZE_X_FRAC`` /
``GAZE_Y_FRAC`` of the eye's width at full gaze, fully in the middle of the opening and not
at all on the lid margin (a smooth weight from the distance to the margin): the lids stay
where the rig puts them, the iris moves and the white stretches on one side. Not a mesh
motion, so a closing lid never meets extra vertices; a nearly closed eye has no room and
its content barely moves.
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


GAZE_X_FRAC = 0.14  # content shift at |gaze_x| = 1, fraction of the eye's width
GAZE_Y_FRAC = 0.06  # ... at |gaze_y| = 1


def shift_gaze(
    maps: np.ndarray, origin: tuple[int, int], q: np.ndarray, gaze: tuple[float, float]
) -> None:
    """Offset the backward ``maps`` (h, w, 2) float32, whose pixel (0, 0) is image pixel
    ``origin`` (x, y), inside each eye's deformed lid opening (``q``: vertex positions,
    landmarks first) so its content moves by ``gaze`` (right, down) in [-1, 1]."""
    if not (gaze[0] or gaze[1]):
        return
    h, w = maps.shape[:2]
    for upper, lower in _EYES:
        poly = np.concatenate([q[list(upper)], q[list(lower[-2:0:-1])]])
        width = float(np.hypot(*(q[upper[-1]] - q[upper[0]])))
        x0 = max(int(np.floor(poly[:, 0].min())) - origin[0] - 1, 0)
        y0 = max(int(np.floor(poly[:, 1].min())) - origin[1] - 1, 0)
        x1 = min(int(np.ceil(poly[:, 0].max())) - origin[0] + 2, w)
        y1 = min(int(np.ceil(poly[:, 1].max())) - origin[1] + 2, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        local = np.round((poly - [x0 + origin[0], y0 + origin[1]]) * 16.0).astype(np.int32)
        cv2.fillPoly(mask, [local], 255, lineType=cv2.LINE_AA, shift=4)
        depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
        room = float(depth.max())
        if room < 1.0:
            continue
        inside = mask.astype(np.float32) * np.float32(1.0 / 255.0)
        # Sideways: the whole height of the opening moves together (the eyeball turns
        # behind the lids; a weight that varied with the height would shear the iris),
        # fading toward the corners, where the white is squeezed or stretched.
        left, right = q[upper[0]], q[upper[-1]]
        axis = (right - left) / max(width, 1e-6)
        xs = np.arange(x0, x1, dtype=np.float32) + np.float32(origin[0] - left[0])
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(origin[1] - left[1])
        along = (xs * np.float32(axis[0]) + ys * np.float32(axis[1])) / np.float32(width)
        t = np.clip(np.minimum(along, 1.0 - along) / 0.3, 0.0, 1.0)
        across = t * t * (3.0 - 2.0 * t) * inside
        # Up and down: the middle of the opening moves, its margins stay (no lid skin is
        # pulled into the eye).
        t = np.clip(depth / (0.8 * room), 0.0, 1.0)
        middle = t * t * (3.0 - 2.0 * t)
        dx = gaze[0] * GAZE_X_FRAC * width
        dy = gaze[1] * min(GAZE_Y_FRAC * width, 0.6 * room)
        box = maps[y0:y1, x0:x1]
        box[:, :, 0] -= np.float32(dx) * across
        box[:, :, 1] -= np.float32(dy) * middle
