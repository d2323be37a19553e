"""Synthetic mouth interior, painted where the jaw drop or the rounding opened the lips.

When the lips part, the mesh stretches a thin strip of the photo over the opening; that strip
is painted over, in a mouth-aligned frame (u across the mouth, corner to corner in [-1, 1];
s down the face, in pixels), as a few scalar fields mixed into RGB with the photo's own
colours:

* the cavity: dark, tinted from the avatar's lip colour; darkest at the back behind the
  upper teeth, lighter and warmer toward the corners (the cheeks' lining catches light there,
  so a wide opening has no black fringe at its corners) and just inside the lips;
* lower teeth: their edges rise from behind the lower lip as the jaw drops (hidden when the
  mouth is barely open), narrower than the upper ones, in the shade of the upper lip;
* the tongue: a rounded mass behind the lower teeth with a lit top and a faint median
  groove, appearing once the mouth is open enough;
* upper teeth: if the photo shows its own teeth, the rig keeps them attached to the upper lip
  (``rig.teeth_ids``) and only the band below them is painted; otherwise a band of painted
  teeth hangs from the upper lip (they move with the skull, not the jaw): scalloped incisal
  edge with a translucent tip, faint gaps, a shadow under the lip, receding into the dark
  toward the corners. Teeth take the photo's own teeth colour when it shows them, otherwise
  ivory pulled toward its skin tone and exposure.

The opening's outline is the deformed inner-lip contours, smoothed (Chaikin) so a wide
opening is round, not a polygon. Coverage is that outline filled with anti-aliased edges,
times a ramp on how far the controls opened the mouth, so the photo's own mouth is untouched
at rest. The painted layer is blurred to the photo's softness (an upscaled small photo gets
a softer interior). All tints are scaled by the photo's colourfulness (a black-and-white
portrait gets a gray mouth). Everything is vectorised over the mouth's bounding box
(~1-2 % of the frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from msadtalker.avatar import topology as tp

TEETH_FRAC = 0.08  # visible upper-teeth height, fraction of the rest mouth width
LOWER_TEETH_FRAC = 0.05  # visible lower-teeth height when the jaw is well open
# Tooth boundaries in |u| (0 = middle, 1 = mouth corner): incisors, canine, premolars.
TOOTH_EDGES = np.array([0.0, 0.16, 0.29, 0.41, 0.52, 0.62, 0.72], np.float32)
LOWER_TOOTH_EDGES = np.array([0.0, 0.11, 0.22, 0.34, 0.46, 0.57, 0.68], np.float32)


@dataclass(frozen=True)
class MouthStyle:
    lip: np.ndarray  # (3,) float32 RGB, median lip colour of the photo
    teeth: np.ndarray  # (3,) float32 RGB
    mouth_width: float  # rest outer-corner distance, pixels
    # How colourful the photo's skin is, 0 (grayscale, sepia-free) .. 1 (ordinary colour
    # photo): the painted interior's own tints (red mucosa, ivory teeth) are scaled by it, so
    # a black-and-white portrait does not get a coloured mouth.
    chroma: float = 1.0
    # Blur of the painted layer, pixels: the photo's own softness (an upscaled small photo
    # is soft; a sharp painted mouth in it looks pasted on).
    softness: float = 0.0

    @property
    def teeth_height(self) -> float:
        return TEETH_FRAC * self.mouth_width

    @property
    def scale(self) -> float:
        """Feature sizes per 100 px of mouth width."""
        return self.mouth_width / 100.0


def mouth_style(
    image: np.ndarray, landmarks: np.ndarray, mouth_width: float, upscale: float = 1.0
) -> MouthStyle:
    """Colours sampled from the photo: the lips (between the outer and inner contours), the
    skin, and the teeth where the lips are apart and bright pixels show between them.
    ``upscale``: how much the image was enlarged from the photo's own pixels (softness)."""
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
    own = _photo_teeth(image, inner, skin)
    if own is not None:
        teeth = own
    softness = max(0.45 * mouth_width / 100.0, 0.4 * max(upscale - 1.0, 0.0))
    return MouthStyle(
        lip=lip,
        teeth=teeth,
        mouth_width=mouth_width,
        chroma=_chroma(skin_px),
        softness=softness,
    )


def _photo_teeth(image: np.ndarray, inner: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """The photo's own teeth colour: the brightest third of the pixels between the inner
    lips, if there are enough of them and they are brighter than the skin (teeth, not a
    dark gap or lip)."""
    filled = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(filled, [np.round(inner).astype(np.int32)], 1)
    inside = cv2.erode(filled, np.ones((3, 3), np.uint8)) > 0
    pixels = image[inside].astype(np.float32)
    if len(pixels) < 30:
        return None
    luma = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = pixels[luma >= np.percentile(luma, 67)]
    colour = np.median(bright, axis=0)
    if float(colour @ np.array([0.299, 0.587, 0.114])) < float(skin @ [0.299, 0.587, 0.114]):
        return None
    return np.asarray(colour, dtype=np.float32)


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
    """Smoothstep of ``t`` clipped to [0, 1] (``t``, a temporary, is overwritten)."""
    np.clip(t, 0.0, 1.0, out=t)
    out: np.ndarray = t * t
    t *= -2.0
    t += 3.0
    out *= t
    return out


def _smooth_scalar(v: float) -> float:
    v = min(max(v, 0.0), 1.0)
    return v * v * (3.0 - 2.0 * v)


def chaikin(points: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Corner-cutting subdivision of an open polyline (N, 2), end points kept: a smooth
    curve through the contour instead of its straight segments."""
    out: np.ndarray = _chaikin_matrix(len(points), rounds) @ points
    return out


@cache
def _chaikin_matrix(n: int, rounds: int) -> np.ndarray:
    """The subdivision as one linear map (it is linear in the points), built once per size."""
    p = np.eye(n)
    for _ in range(rounds):
        a, b = p[:-1], p[1:]
        q = np.empty((2 * len(a), n))
        q[0::2] = 0.75 * a + 0.25 * b
        q[1::2] = 0.25 * a + 0.75 * b
        p = np.concatenate([p[:1], q, p[-1:]])
    p.setflags(write=False)
    return p


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

    The painted colour is linear in five scalar fields (cavity light, lip lining, tongue
    light, teeth light, teeth tip), each with its own RGB tint: the fields are computed per
    pixel as planes and mixed into RGB by one ``cv2.transform`` (numpy broadcasting over a
    trailing axis of 3 is several times slower).
    """
    cover = min(max((opening_px - 0.5) / 3.0, 0.0), 1.0)
    if cover <= 0.0:
        return None
    upper_lip = q[_UPPER_INNER]
    photo_teeth = len(teeth_ids) > 0
    smooth_lip, smooth_upper, smooth_lower = _outline(q, teeth_ids)
    poly = np.concatenate([smooth_upper, smooth_lower[-2:0:-1]])
    h, w = out.shape[:2]
    scale = style.scale
    pad = 2 + int(np.ceil(2.0 * scale + 2.0 * style.softness))
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
    s_lip, s_top, s_lo = _curves(u, half, centre, e, down, (smooth_lip, smooth_upper, smooth_lower))

    below_top = s - s_top
    above_lower = s_lo - s
    gap = np.maximum(s_lo - s_top, 1e-3)
    au = np.abs(u)
    u2 = au * au

    # Cavity: dark at the back (the middle, under the upper teeth), warmer and lighter
    # toward the corners and just inside the lower lip.
    rim = np.exp(np.maximum(above_lower, 0.0) * np.float32(-1.0 / (3.0 * scale)))
    cavity = (0.22 + 0.3 * rim) * (1.0 - 0.35 * u2) + 0.25 * _smooth((au - 0.45) / 0.45)
    # Lining: toward the corners the opening narrows to the lips' wet inner surface, lip
    # coloured, not a dark wedge.
    lining = 0.85 * _smooth((au - 0.72) / 0.26)
    cavity *= 1.0 - lining

    # Tongue: a dome behind the lower teeth, its top lit, a faint groove down its middle;
    # visible once the gap is large enough (skipped while it cannot show anywhere).
    zero = np.zeros_like(cavity)
    tongue, tongue_lit = zero, zero
    if float(gap.max()) > 6.0 * scale:
        tongue_h = np.minimum(0.5 * gap, 0.22 * style.mouth_width) * (1.0 - 0.5 * u2)
        rel = above_lower / np.maximum(tongue_h, 1e-3)
        t_shape = (u / 0.6) ** 2 + rel * rel
        show_tongue = _smooth((gap / scale - 6.0) / 10.0)
        tongue = (1.0 - _smooth((t_shape - 0.75) / 0.35)) * show_tongue
        groove = 1.0 - 0.18 * np.exp(-((u * np.float32(half / (1.5 * scale))) ** 2))
        tongue_lit = (0.45 + 0.4 * _smooth(rel - 0.2)) * (1.0 - 0.45 * u2) * groove * tongue
        cavity *= 1.0 - tongue

    # Lower teeth: edges behind the lower lip, revealed as the jaw drops (in the shade of
    # the upper lip: darker than the upper row).
    teeth_lit, teeth_tip = zero, zero
    reveal = _smooth_scalar((opening_px / style.mouth_width - 0.14) / 0.12)
    if reveal > 0.05:
        height = LOWER_TEETH_FRAC * style.mouth_width * reveal
        l_band, l_light, l_tip = _teeth(above_lower - scale, au, half, scale, height, True)
        l_band *= _smooth_scalar((reveal - 0.05) / 0.2)
        keep = 1.0 - l_band
        teeth_lit = 0.62 * l_light * l_band
        teeth_tip = teeth_lit * l_tip
        cavity *= keep
        tongue_lit = tongue_lit * keep
        lining *= keep
    if not photo_teeth:
        band, light, tip = _teeth(s - s_lip, au, half, scale, style.teeth_height, False)
        keep = 1.0 - band
        cavity *= keep
        lining *= keep
        tongue_lit = tongue_lit * keep
        lit = light * band
        teeth_lit = teeth_lit * keep + lit
        teeth_tip = teeth_tip * keep + lit * tip

    # Inner-lip shadow: the lips overhang the cavity by a pixel or two.
    # The lower lip's inner edge casts the deeper shadow: a dark crease between the lip and
    # the teeth or tongue behind it keeps the lip's edge legible.
    shadow = (0.8 + 0.2 * _smooth(below_top / (2.5 * scale))) * (
        0.55 + 0.45 * _smooth((above_lower - 0.5 * scale) / (2.0 * scale))
    )
    fields = [cavity, lining, tongue_lit, teeth_lit, teeth_tip]
    fields = [np.multiply(f, shadow, dtype=np.float32) if f is not zero else f for f in fields]
    if photo_teeth:
        # The photo's teeth fade into the dark instead of ending on a hard line.
        alpha *= 0.25 + 0.75 * _smooth((below_top + 0.5) / (2.5 * scale))

    mucosa = style.lip * np.array([0.5, 0.27, 0.29], np.float32)
    tongue_rgb = style.lip * np.array([1.08, 0.78, 0.8], np.float32)
    translucent = np.array([0.9, 0.92, 0.96], np.float32)
    lining_rgb = style.lip * np.array([0.8, 0.62, 0.64], np.float32)
    tints = [mucosa, lining_rgb, tongue_rgb, style.teeth, style.teeth * (translucent - 1.0)]
    mix = np.array(tints, np.float64).T  # (3, 5): RGB of each field
    if style.chroma < 1.0:
        # Desaturation is linear too: apply it to the tints.
        gray = np.array([0.299, 0.587, 0.114]) @ mix
        mix = gray + (mix - gray) * style.chroma
    colour = np.asarray(cv2.transform(cv2.merge(fields), mix), dtype=np.float32)
    if style.softness > 0.3:
        colour = np.asarray(cv2.GaussianBlur(colour, (0, 0), style.softness), dtype=np.float32)
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


def _outline(q: np.ndarray, teeth_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed contours of the opening: the upper inner lip, the painted region's upper
    boundary (the upper lip, or the edge of the photo's teeth kept by the warp) and the
    lower inner lip."""
    upper_lip = q[_UPPER_INNER]
    smooth_lip, smooth_lower = chaikin(upper_lip), chaikin(q[_LOWER_INNER])
    if len(teeth_ids) == 0:
        return smooth_lip, smooth_lip, smooth_lower
    # Toward the corners the painted region reaches up to the upper lip: the photo's own
    # dark mouth corners (beside its teeth) are covered by the lip lining.
    edge = q[teeth_ids]
    if len(edge) == len(upper_lip) - 2:
        across = np.abs(np.linspace(-1.0, 1.0, len(edge) + 2)[1:-1])
        lift = np.array([_smooth_scalar((a - 0.55) / 0.35) for a in across])[:, None]
        edge = edge + lift * (upper_lip[1:-1] - edge)
    smooth_upper = chaikin(np.concatenate([upper_lip[:1], edge, upper_lip[-1:]]))
    return smooth_lip, smooth_upper, smooth_lower


# Contours are tabulated over u in [-_U_SPAN, _U_SPAN] (beyond the corners they are
# constant): a per-pixel table look-up instead of a binary search per pixel and contour.
_U_SPAN = 1.6
_U_STEPS = 512


def _curves(
    u: np.ndarray,
    half: float,
    centre: np.ndarray,
    e: np.ndarray,
    down: np.ndarray,
    contours: tuple[np.ndarray, ...],
) -> list[np.ndarray]:
    """Each contour's s (mouth coordinates, pixels) at every pixel's u, interpolated along
    the (smoothed) polyline and constant beyond its ends; a contour given twice is
    interpolated once. Tabulated every 3.2 / 512 of the half-width (under 0.5 px at 512)."""
    grid = np.linspace(-_U_SPAN, _U_SPAN, _U_STEPS)
    index = u * np.float32((_U_STEPS - 1) / (2.0 * _U_SPAN))
    index += np.float32(0.5 + (_U_STEPS - 1) / 2.0)
    np.clip(index, 0, _U_STEPS - 1, out=index)
    cells = index.astype(np.intp)
    out: list[np.ndarray] = []
    for k, points in enumerate(contours):
        same = next((i for i in range(k) if contours[i] is points), None)
        if same is not None:
            out.append(out[same])
            continue
        pu = ((points - centre) @ e) / half
        ps = (points - centre) @ down
        order = np.argsort(pu)
        table = np.interp(grid, pu[order], ps[order]).astype(np.float32)
        out.append(table[cells])
    return out


def _teeth(
    from_root: np.ndarray,
    au: np.ndarray,
    half: float,
    scale: float,
    height: float | np.ndarray,
    lower: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row of teeth: coverage ``band``, ``light`` (shading, gaps) and ``tip`` (0..1 toward
    the translucent biting edge), per pixel. ``from_root``: distance from the lip the row
    hangs from (upper) or rises behind (lower), pixels, growing toward the biting edge."""
    edges = LOWER_TOOTH_EDGES if lower else TOOTH_EDGES
    k = np.clip(np.searchsorted(edges, au) - 1, 0, len(edges) - 2)
    lo, hi = edges[k], edges[k + 1]
    across = (au - lo) / (hi - lo)
    length = height * (1.0 - 0.35 * au * au) * (1.0 - 0.08 * (2.0 * across - 1.0) ** 2)
    band = _smooth((from_root + 1.5 * scale) / (1.5 * scale))
    band *= 1.0 - _smooth((from_root - length + 0.8 * scale) / (1.6 * scale))
    band *= 1.0 - _smooth((au - (0.3 if lower else 0.45)) / 0.25)
    # Shadow near the lip they hang from / rise behind; side teeth recede into the dark.
    light = 0.72 + 0.28 * _smooth(from_root / (0.5 * max(float(np.max(height)), 1e-3)))
    light *= 1.0 - 0.6 * au * au
    edge_px = np.minimum(across, 1.0 - across) * (hi - lo) * half
    # Gaps between teeth, fading out toward the sides.
    light *= 1.0 - 0.14 * (1.0 - au) * np.exp(-((edge_px / (0.8 * scale)) ** 2))
    tip = _smooth((from_root - 0.72 * length) / (0.28 * length + 1e-3))
    return band, light, tip
