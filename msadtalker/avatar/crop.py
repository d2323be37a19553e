"""SadTalker's "crop" framing from our 468-point landmarks, and pasting a crop back.

FFHQ-style oriented quad (official: OpenTalker/SadTalker ``src/utils/croper.py``) from the eye
centres and the mouth corners (the 68-point layout's ``mean(lm[36:42])``, ``mean(lm[42:48])``
and ``(lm[48] + lm[54]) / 2``, which ``topology`` maps onto the 468-point mesh):

    e2e = eye_r - eye_l, e2m = mouth - eye_avg
    x = e2e - rot90(e2m), normalised, scaled to max(2 |e2e|, 1.8 |e2m|); y = rot90(x)
    centre = eye_avg + 0.1 e2m; quad = centre -/+ x -/+ y; qsize = 2 |x|

SadTalker's crop mode cuts the quad's axis-aligned bounding box and resizes it to S x S
without keeping the aspect ratio. We keep the framing but always cut a SQUARE (the bounding
box's long side, centred on it, moved inside the picture, shrunk to fit if the picture is
smaller) so the face is never stretched.

That square is what the neural path needs (its networks were trained on such crops). The
mesh renderer shows a presenter's close-up instead (``head_box``): the same square moved
down by ``HEAD_SHIFT`` of its side, so the eye line sits near 3/8 of the height rather than
the middle and the neck and collar show below the chin (SadTalker's square ends about half a
mouth width under it: a dropping jaw ran into the frame's edge, with nothing still beside it
to move against). The side is kept, so the face keeps its pixels; the crown may be cut, as
in a broadcast close-up.

Coordinates: pixel-centre convention throughout (pixel (r, c) is centred at x = c, y = r); a
box ``(x0, y0, side)`` covers the continuous square [x0, x0 + side) in edge coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from msadtalker.avatar.topology import eye_centres, mouth_centre


@dataclass(frozen=True)
class CropBox:
    """An axis-aligned square in some image's pixels (edge coordinates)."""

    x0: float
    y0: float
    side: float

    def scaled(self, factor: float) -> CropBox:
        return CropBox(self.x0 * factor, self.y0 * factor, self.side * factor)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.x0, self.y0, self.side)


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(4, 2) quad corners (c-x-y, c-x+y, c+x+y, c+x-y) and qsize, as SadTalker builds them."""
    eye_l, eye_r = eye_centres(landmarks)
    eye_avg = (eye_l + eye_r) / 2.0
    e2e = eye_r - eye_l
    e2m = mouth_centre(landmarks) - eye_avg
    x = np.array([e2e[0] + e2m[1], e2e[1] - e2m[0]], dtype=np.float64)
    x /= max(float(np.hypot(*x)), 1e-9)
    x *= max(2.0 * float(np.hypot(*e2e)), 1.8 * float(np.hypot(*e2m)))
    y = np.array([-x[1], x[0]])
    c = eye_avg + 0.1 * e2m
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, 2.0 * float(np.hypot(*x))


def square_crop_box(landmarks: np.ndarray, width: int, height: int) -> CropBox:
    """The square crop around the quad's bounding box, inside a ``width`` x ``height`` image."""
    quad, _ = ffhq_quad(landmarks)
    quad = quad + 0.5  # pixel centres -> edge coordinates (SadTalker adds 0.5 too)
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    side = float(max(hi - lo))
    side = min(side, float(width), float(height))
    side = float(max(1, math.floor(side)))
    cx, cy = (lo + hi) / 2.0
    x0 = min(max(cx - side / 2.0, 0.0), width - side)
    y0 = min(max(cy - side / 2.0, 0.0), height - side)
    return CropBox(float(round(x0)), float(round(y0)), side)


HEAD_SHIFT = 0.1  # the talking-head frame: SadTalker's square moved down by this of its side


def head_box(landmarks: np.ndarray, width: int, height: int) -> CropBox:
    """The talking-head frame: ``square_crop_box`` moved down by ``HEAD_SHIFT`` of its side,
    as far as the picture goes (same side, same horizontal position)."""
    base = square_crop_box(landmarks, width, height)
    y0 = min(base.y0 + HEAD_SHIFT * base.side, height - base.side)
    return CropBox(base.x0, float(round(max(y0, base.y0))), base.side)


def cut_square(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """The box's pixels resized to ``size`` x ``size`` (area filter down, bicubic up)."""
    x0, y0, side = int(box.x0), int(box.y0), int(box.side)
    region = image[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(region, (size, size), interpolation=interp)


def to_box_coords(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Image landmarks (x, y, z) -> coordinates in the box resized to ``size`` (z scaled too)."""
    k = size / box.side
    out = points.astype(np.float64).copy()
    out[:, 0] = (points[:, 0] + 0.5 - box.x0) * k - 0.5
    out[:, 1] = (points[:, 1] + 0.5 - box.y0) * k - 0.5
    out[:, 2] = points[:, 2] * k
    return out.astype(np.float32)


def from_box_coords(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Inverse of ``to_box_coords``."""
    k = box.side / size
    out = points.astype(np.float64).copy()
    out[:, 0] = (points[:, 0] + 0.5) * k + box.x0 - 0.5
    out[:, 1] = (points[:, 1] + 0.5) * k + box.y0 - 0.5
    out[:, 2] = points[:, 2] * k
    return out.astype(np.float32)


def full_frame_scale(width: int, height: int, max_side: int) -> tuple[float, int, int]:
    """Scale and even output size for "full" mode (long side <= ``max_side``, H.264-safe)."""
    scale = min(1.0, max_side / max(width, height))
    out_w = max(2, int(width * scale) // 2 * 2)
    out_h = max(2, int(height * scale) // 2 * 2)
    return scale, out_w, out_h


def feather_mask(height: int, width: int, feather: float) -> np.ndarray:
    """(H, W) float32 alpha: 1 inside, a raised-cosine ramp ``feather`` px wide at the edges."""

    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5)
        t = np.clip(d / max(feather, 1e-6), 0.0, 1.0)
        out: np.ndarray = (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
        return out

    return np.outer(ramp(height), ramp(width))


def paste_crop(
    original: np.ndarray, crop: np.ndarray, box: CropBox, feather_frac: float = 0.08
) -> np.ndarray:
    """Blend a rendered S x S crop back over ``box`` of ``original`` with a feathered edge.

    For renderers that only produce the crop (the neural path); the mesh renderer renders
    "full" mode on the photo directly and needs no paste.
    """
    x0, y0, side = int(round(box.x0)), int(round(box.y0)), int(round(box.side))
    h, w = original.shape[:2]
    x1, y1 = min(x0 + side, w), min(y0 + side, h)
    x0c, y0c = max(x0, 0), max(y0, 0)
    if x1 <= x0c or y1 <= y0c:
        return original.copy()
    resized = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)
    region = resized[y0c - y0 : y1 - y0, x0c - x0 : x1 - x0].astype(np.float32)
    alpha = feather_mask(side, side, feather_frac * side)[y0c - y0 : y1 - y0, x0c - x0 : x1 - x0]
    out = original.copy()
    base = out[y0c:y1, x0c:x1].astype(np.float32)
    blended = base + (region - base) * alpha[:, :, None]
    out[y0c:y1, x0c:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
