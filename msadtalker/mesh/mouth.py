"""Synthetic mouth interior, painted where the jaw drop opened the lips.

When the jaw drops, the mesh stretches a thin strip of the photo over the opening; that strip
is painted over, in a mouth-aligned frame (u across the mouth, corner to corner in [-1, 1];
s down the face, in pixels):

* the cavity: dark, tinted from the avatar's own lip colour, lighter and warmer just inside
  the lips (wet mucosa catching light), darkest in the middle and toward the corners;
* the tongue: a rounded mass resting on the lower lip (it moves with the jaw), lip-tinted,
  appearing once the mouth is open enough;
* upper teeth: if the photo shows its own teeth, the rig keeps them attached to the upper lip
  (``rig.teeth_ids``) and only the band below them is painted; otherwise a band of painted
  teeth hangs from the upper lip (teeth move with the skull, not the jaw): fixed height,
  scalloped incisal edge, faint gaps between incisors/canines/premolars, darker under the
  lip and toward the corners where they disappear into the cavity.

Coverage is the painted polygon filled with anti-aliased edges, times a ramp on how far the
controls opened the mouth, so the photo's own mouth is untouched at rest. The painted layer
is blurred to the photo's softness. Everything is vectorised over the mouth's bounding box
(~1-2 % of the frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from msadtalker.avatar import topology as tp

TEETH_FRAC = 0.11  # visible upper-teeth height, fraction of the rest mouth width
# Tooth boundaries in |u| (0 = middle, 1 = mouth corner): incisors, canine, premolars.
TOOTH_EDGES = np.array([0.0, 0.16, 0.29, 0.41, 0.52, 0.62, 0.72], np.float32)


@dataclass(frozen=True)
class MouthStyle:
    lip: np.ndarray  # (3,) float32 RGB, median lip colour of the photo
    teeth: np.ndarray  # (3,) float32 RGB
    mouth_width: float  # rest outer-corner distance, pixels
    # How colourful the photo's skin is, 0 (grayscale, sepia-free) .. 1 (ordinary colour
    # photo): the painted interior's own tints (red mucosa, ivory teeth) are scaled by it, so
    # a black-and-white portrait does not get a coloured mouth.
    chroma: float = 1.0

    @property
    def teeth_height(self) -> float:
        return TEETH_FRAC * self.mouth_width


def mouth_style(image: np.ndarray, landmarks: np.ndarray, mouth_width: float) -> MouthStyle:
    """Colours sampled from the photo: the lips (between the outer and inner contours)."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    outer = np.concatenate(
        [landmarks[list(tp.LIPS_UPPER_OUTER), :2], landmarks[list(tp.LIPS_LOWER_OUTER[::-1]), :2]]
    )
    inner = np.concatenate(
        [landmarks[list(tp.LIPS_UPPER_INNER), :2], landmarks[list(tp.LIPS_LOWER_INNER[::-1]), :2]]
    )
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 0)
    pixels = image[mask > 0].astype(np.float32)
    lip = np.median(pixels, axis=0) if len(pixels) >= 8 else np.array([170.0, 95.0, 95.0])
    lip = np.clip(lip, 40.0, 255.0).astype(np.float32)
    # Teeth: ivory pulled toward the photo's skin tone and exposure (a bright white band
    # looks pasted on in a warm or dim photo).
    hull = cv2.convexHull(np.round(landmarks[:, :2]).astype(np.int32))
    face = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(face, hull, 1)
    skin_px = image[face > 0].astype(np.float32)
    skin = np.median(skin_px, axis=0) if len(skin_px) >= 8 else np.array([200.0, 160.0, 140.0])
    luma = float(np.asarray(skin) @ np.array([0.299, 0.587, 0.114]))
    gain = float(np.clip(luma / 165.0, 0.5, 1.0))
    ivory = np.array([228.0, 218.0, 196.0])
    teeth = ((0.65 * ivory + 0.35 * skin / max(luma, 1.0) * 205.0) * gain).astype(np.float32)
    return MouthStyle(lip=lip, teeth=teeth, mouth_width=mouth_width, chroma=_chroma(skin_px))


# Saturation (max - min) / max of skin at and above which a photo counts as fully in colour;
# skin in colour photos measures about 0.2-0.45, grayscale 0, faded/sepia prints ~0.05-0.1.
FULL_COLOUR_SATURATION = 0.15


def _chroma(skin: np.ndarray) -> float:
    if len(skin) < 8:
        return 1.0
    hi, lo = skin.max(axis=1), skin.min(axis=1)
    saturation = float(np.median((hi - lo) / np.maximum(hi, 1.0)))
    return float(np.clip(saturation / FULL_COLOUR_SATURATION, 0.0, 1.0))


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    out: np.ndarray = t * t * (3.0 - 2.0 * t)
    return out


def draw_mouth(
    out: np.ndarray,
    q: np.ndarray,
    style: MouthStyle,
    opening_px: float,
    teeth_ids: np.ndarray,
) -> tuple[int, int, int, int] | None:
    """Paint the interior into ``out`` (H, W, 3) uint8 in place; returns the painted box.

    ``q``: deformed vertex positions (landmarks first); ``opening_px``: how far the controls
    opened the lips beyond the photo, in pixels (0 paints nothing); ``teeth_ids``: the rig's
    teeth-edge vertices (photo teeth kept by the warp) or empty (paint teeth).

    The painted colour is linear in a few scalar fields (cavity depth, tongue light, teeth
    light), each with its own RGB tint: the fields are computed per pixel as planes and
    mixed into RGB by one ``cv2.transform`` (numpy broadcasting over a trailing axis of 3
    is several times slower).
    """
    cover = float(np.clip((opening_px - 0.5) / 3.0, 0.0, 1.0))
    if cover <= 0.0:
        return None
    upper_lip = q[_UPPER_INNER]
    lower = q[_LOWER_INNER]
    photo_teeth = len(teeth_ids) > 0
    if photo_teeth:
        upper = np.concatenate([upper_lip[:1], q[teeth_ids], upper_lip[-1:]])
    else:
        upper = upper_lip
    poly = np.concatenate([upper, lower[-2:0:-1]])
    h, w = out.shape[:2]
    scale = style.mouth_width / 100.0  # feature sizes per 100 px of mouth width
    pad = 2 + int(np.ceil(2.0 * scale))
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    x0 = max(int(np.floor(lo[0])) - pad, 0)
    y0 = max(int(np.floor(lo[1])) - pad, 0)
    x1 = min(int(np.ceil(hi[0])) + pad + 1, w)
    y1 = min(int(np.ceil(hi[1])) + pad + 1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None

    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((poly - [x0, y0]) * 16.0).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = mask.astype(np.float32)
    alpha *= cover / 255.0

    # Mouth frame from the deformed inner corners.
    left, right = upper_lip[0], upper_lip[-1]
    axis = right - left
    half = max(float(np.hypot(*axis)) / 2.0, 1.0)
    e = axis / (2.0 * half)
    down = np.array([-e[1], e[0]])
    centre = (left + right) / 2.0
    # Mouth coordinates of every pixel of the box, by broadcasting a row and a column.
    cols = np.arange(x0, x1, dtype=np.float32) - np.float32(centre[0])
    rows = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(centre[1])
    u = (cols * np.float32(e[0] / half)) + rows * np.float32(e[1] / half)
    s = (cols * np.float32(down[0])) + rows * np.float32(down[1])
    s_lip, s_top, s_lo = _curves(u, half, centre, e, down, (upper_lip, upper, lower))

    below_top = s - s_top
    above_lower = s_lo - s
    gap = np.maximum(s_lo - s_top, 1e-3)
    au = np.abs(u)

    # Cavity: warm and lighter just inside the lower lip, dark in the middle, under the
    # teeth and toward the corners.
    edge_dist = np.maximum(np.minimum(below_top, above_lower), 0.0)
    rim = np.exp(np.maximum(above_lower, 0.0) * np.float32(-1.0 / (3.0 * scale)))
    depth = (0.3 + 0.45 * rim) * (1.0 - 0.4 * au * au)

    # Tongue: rounded, resting on the lower lip, visible once the gap is large enough.
    tongue_h = np.maximum(0.4 * gap, 1e-3)
    rel = above_lower / tongue_h
    t_shape = (u / 0.55) ** 2 + rel * rel
    tongue = (1.0 - _smooth((t_shape - 0.7) / 0.4)) * _smooth((gap / scale - 8.0) / 14.0)
    t_light = 0.5 + 0.25 * _smooth(1.0 - rel)
    # colour = mucosa * depth (1 - tongue) + tongue_rgb * t_light * tongue [teeth over it]
    cavity = depth * (1.0 - tongue)
    tongue_lit = t_light * tongue
    mucosa = style.lip * np.array([0.62, 0.34, 0.36], np.float32)
    tongue_rgb = style.lip * np.array([1.0, 0.8, 0.82], np.float32)
    fields = [cavity, tongue_lit]
    tints = [mucosa, tongue_rgb]
    if not photo_teeth:
        band, light, tip = _upper_teeth(s - s_lip, au, half, scale, style)
        keep = 1.0 - band
        cavity *= keep
        tongue_lit *= keep
        teeth = light * band
        fields += [teeth, teeth * tip]
        translucent = np.array([0.86, 0.88, 0.93], np.float32)
        tints += [style.teeth, style.teeth * (translucent - 1.0)]

    # Inner-lip shadow: the lips overhang the cavity by a pixel or two.
    shadow = 0.75 + 0.25 * _smooth(edge_dist / (1.5 * scale))
    for field in fields:
        field *= shadow
    if photo_teeth:
        # The photo's teeth fade into the dark instead of ending on a hard line.
        alpha *= 0.25 + 0.75 * _smooth((below_top + 0.5) / (2.5 * scale))

    mix = np.array(tints, np.float64).T  # (3, F): RGB of each field
    if style.chroma < 1.0:
        # Desaturation is linear too: apply it to the tints.
        gray = np.array([0.299, 0.587, 0.114]) @ mix
        mix = gray + (mix - gray) * style.chroma
    if len(fields) == 2:
        fields.append(np.zeros_like(cavity))
        mix = np.column_stack([mix, np.zeros(3)])
    colour = np.asarray(cv2.transform(cv2.merge(fields), mix), dtype=np.float32)
    sigma = 0.45 * scale
    if sigma > 0.3:
        colour = np.asarray(cv2.GaussianBlur(colour, (0, 0), sigma), dtype=np.float32)
    region = out[y0:y1, x0:x1].astype(np.float32)
    colour -= region
    colour *= cv2.merge([alpha, alpha, alpha])
    colour += region
    # Never emit pure black: keeps "black pixel" checks meaningful and survives YUV rounding.
    colour += 0.5
    np.clip(colour, 1.0, 255.0, out=colour)
    out[y0:y1, x0:x1] = colour.astype(np.uint8)
    return x0, y0, x1, y1


_UPPER_INNER = list(tp.LIPS_UPPER_INNER)
_LOWER_INNER = list(tp.LIPS_LOWER_INNER)


def _curves(
    u: np.ndarray,
    half: float,
    centre: np.ndarray,
    e: np.ndarray,
    down: np.ndarray,
    contours: tuple[np.ndarray, ...],
) -> list[np.ndarray]:
    """Each contour's s (mouth coordinates, pixels) at every pixel's u, linearly
    interpolated along u and constant beyond its ends."""
    u_flat = u.ravel()
    out = []
    for points in contours:
        pu = ((points - centre) @ e) / half
        ps = (points - centre) @ down
        order = np.argsort(pu)
        values = np.interp(u_flat, pu[order], ps[order]).astype(np.float32)
        out.append(values.reshape(u.shape))
    return out


def _upper_teeth(
    below_lip: np.ndarray,
    au: np.ndarray,
    half: float,
    scale: float,
    style: MouthStyle,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Painted upper teeth: coverage ``band``, ``light`` (shading, gaps) and ``tip`` (0..1
    toward the translucent incisal edge), per pixel."""
    th = style.teeth_height
    # Which tooth, and where across it (0..1), for the scalloped edge and the gaps.
    k = np.clip(np.searchsorted(TOOTH_EDGES, au) - 1, 0, len(TOOTH_EDGES) - 2)
    lo, hi = TOOTH_EDGES[k], TOOTH_EDGES[k + 1]
    across = (au - lo) / (hi - lo)
    length = th * (1.0 - 0.3 * au * au) * (1.0 - 0.08 * (2.0 * across - 1.0) ** 2)
    band = _smooth((below_lip + 1.5 * scale) / (1.5 * scale))
    band *= 1.0 - _smooth((below_lip - length + 0.8 * scale) / (1.6 * scale))
    band *= 1.0 - _smooth((au - 0.5) / 0.25)
    light = 0.7 + 0.3 * _smooth(below_lip / (0.5 * th))  # shadow under the lip
    light *= 1.0 - 0.6 * au * au  # side teeth recede into the dark
    edge_px = np.minimum(across, 1.0 - across) * (hi - lo) * half
    # Gaps between teeth, fading out toward the sides.
    light *= 1.0 - 0.12 * (1.0 - au) * np.exp(-((edge_px / (0.8 * scale)) ** 2))
    tip = _smooth((below_lip - 0.72 * length) / (0.28 * length + 1e-3))
    return band, light, tip
