"""The rig's expression bases: how each face control moves the vertices, at full strength.

Every basis is a (V, 3) displacement (x, y in pixels of the photo, z on x's scale, toward the
viewer < 0) applied in the photo's frame before the head rotation, so a protruded lip shows
its depth when the head turns. Coordinates: ``FaceFrame`` (``e`` along the eye line,
``down`` toward the chin) and, around the mouth, mouth coordinates (``um`` across from the
mouth's centre, ``sm`` down, ``half`` = half the rest mouth width).

* ``jaw`` (mouth_open = 1): lower lip, chin and jaw move down the face by up to ``OPEN_FRAC``
  of the mouth width (lower lip 1, corners 0.35, tapering toward the jaw angles and the
  cheeks; the upper lip lifts a little in the middle; teeth-edge vertices stay with it).
* ``spread`` (mouth_wide = +1, "ee", "s"): the lips stretch sideways by ``SPREAD_FRAC`` of
  half their width and pull back a little.
* ``round`` (mouth_wide = -1, "oo", "oh", "w"): the lips gather toward the middle by
  ``ROUND_FRAC`` of half their width, the cheeks beside them follow with a falloff, the lips
  evert (more red shows above and below) and push forward by ``PROTRUDE_FRAC`` of the mouth
  width. The opening becomes an oval, not the photo's smile squeezed into a deep "U": the
  corners come down (``ROUND_CORNER_DROP``: the smile relaxes), the upper lip arches up in
  the middle while the lower one parts down (``ROUND_GAP_FRAC``), and toward the corners
  the inner contours close on each other (``ROUND_CLOSE``: the lips thicken there and the
  upper teeth hide at the sides). The falloff is steep above the upper lip, so the nose
  does not narrow with the mouth.
* ``rounded jaw`` (weighted by mouth_open x rounding): how rounding changes the jaw drop.
  Opened wide, a rounded mouth stays an oval: the corners follow the lower lip further
  (``ROUND_JAW_CORNER`` of the drop instead of ``JAW_CORNER``), the upper lip arches
  (``ROUND_JAW_LIFT``) and the lips gather a little less (``ROUND_JAW_WIDEN``: an open "oh"
  is wider than a closed "oo").
* ``blink``: the upper lid's lash line travels 80 % of the lid opening and the lower one
  20 %, so they meet; the rings above and below follow partly.

(The gaze is not a mesh motion: ``eyes.shift_gaze`` moves the eye's content inside the lid
opening in the backward map, so a closing lid never meets extra vertices.)
"""

from __future__ import annotations

import numpy as np

from msadtalker.avatar import topology as tp
from msadtalker.mesh.face_frame import FaceFrame

OPEN_FRAC = 0.30  # lip gap added at mouth_open = 1, as a fraction of the mouth width
JAW_CORNER = 0.35  # share of the jaw drop taken by the mouth corners
JAW_LIFT = 0.12  # upper lip's lift in the middle, share of the jaw drop
ROUND_JAW_CORNER = 0.5  # the same two for a rounded mouth (mouth_wide = -1)
ROUND_JAW_LIFT = 0.2
ROUND_JAW_WIDEN = 0.1  # a rounded mouth opened wide gathers less: corners travel back by this
SPREAD_FRAC = 0.16  # mouth-corner travel at mouth_wide = +1, fraction of half the width
ROUND_FRAC = 0.40  # mouth-corner travel at mouth_wide = -1, fraction of half the width
ROUND_GAP_FRAC = 0.03  # lip parting in the middle at mouth_wide = -1, fraction of the width
ROUND_ARCH_SHARE = 0.5  # share of that parting taken by the upper lip arching up
ROUND_CORNER_DROP = 0.05  # mouth corners come down by this at mouth_wide = -1, of the width
ROUND_CLOSE = 0.5  # toward the corners the inner lips close this share of their rest gap
ROUND_CLOSE_UPPER = 0.35  # share of that closing done by the upper lip (the rest: the lower)
EVERT_FRAC = 0.035  # outer lip contours move apart by this (each), fraction of the width
PROTRUDE_FRAC = 0.12  # lips move toward the viewer by this, fraction of the width

EYES = (
    (
        tp.RIGHT_EYE_UPPER0,
        tp.RIGHT_EYE_LOWER0,
        tp.RIGHT_EYE_UPPER1,
        tp.RIGHT_EYE_UPPER2,
        tp.RIGHT_EYE_LOWER1,
    ),
    (
        tp.LEFT_EYE_UPPER0,
        tp.LEFT_EYE_LOWER0,
        tp.LEFT_EYE_UPPER1,
        tp.LEFT_EYE_UPPER2,
        tp.LEFT_EYE_LOWER1,
    ),
)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    out: np.ndarray = t * t * (3.0 - 2.0 * t)
    return out


def mouth_coords(
    lm: np.ndarray, frame: FaceFrame, u: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    corners = lm[list(tp.MOUTH_CORNERS), :2]
    mu, ms = frame.uv(corners.mean(axis=0, keepdims=True))
    half = float(np.hypot(*(corners[1] - corners[0]))) / 2.0
    return u - mu[0], s - ms[0], max(half, 1e-6)


def contour(lm: np.ndarray, ids: tuple[int, ...], frame: FaceFrame, um: np.ndarray) -> np.ndarray:
    """The contour's s (mouth coordinates) interpolated at each ``um``."""
    u, s = frame.uv(lm[list(ids), :2])
    cu, cs, _ = mouth_coords(lm, frame, u, s)
    order = np.argsort(cu)
    return np.asarray(np.interp(um, cu[order], cs[order]), dtype=np.float64)


def _lift(xy: np.ndarray) -> np.ndarray:
    """(V, 2) -> (V, 3) with z = 0."""
    return np.column_stack([xy, np.zeros(len(xy))])


def jaw_basis(
    lm: np.ndarray,
    u: np.ndarray,
    s: np.ndarray,
    frame: FaceFrame,
    mouth_width: float,
    upper_jaw: np.ndarray,
    corner: float = JAW_CORNER,
    lift: float = JAW_LIFT,
    corner_power: float = 4.0,
) -> np.ndarray:
    """Jaw-drop displacement at mouth_open = 1 (see the module docstring).

    Membership m (share of the full drop) as a smooth field in mouth coordinates: lower lip 1
    in the middle tapering to ``corner`` at the corners; chin and jaw 1, tapering toward the
    jaw angles; cheeks above the corner line little; upper lip lifts by ``lift`` in the
    middle and follows the corners near them (``corner_power``: how close to the corners).
    """
    um, sm, half = mouth_coords(lm, frame, u, s)
    r = np.clip(np.abs(um) / half, 0.0, 1.0)
    split = 0.5 * (
        contour(lm, tp.LIPS_UPPER_INNER, frame, um) + contour(lm, tp.LIPS_LOWER_INNER, frame, um)
    )
    top = contour(lm, tp.LIPS_UPPER_OUTER, frame, um)

    # Generic field: rises below the corner line, tapering toward the jaw angles.
    vertical = smoothstep((sm + 0.3 * half) / (0.9 * half))
    lateral = 1.0 - 0.8 * smoothstep((np.abs(um) - 0.8 * half) / (1.6 * half))
    m = vertical * lateral

    span = np.abs(um) < half
    lower = span & (sm > split)
    m = np.where(lower, np.maximum(corner + (1.0 - corner) * (1.0 - r * r), m), m)
    upper = span & (sm <= split) & (sm >= top - 0.08 * half)
    upper_lip = -lift * (1.0 - r * r) + corner * r**corner_power
    m = np.where(upper, upper_lip, m)
    m[list(tp.MOUTH_CORNERS + tp.INNER_MOUTH_CORNERS)] = corner
    # Teeth-edge vertices belong to the upper jaw: they move as the upper lip above them.
    m[upper_jaw] = upper_lip[upper_jaw]
    return _lift(OPEN_FRAC * mouth_width * m[:, None] * frame.down[None, :])


def rounded_jaw_basis(
    lm: np.ndarray,
    u: np.ndarray,
    s: np.ndarray,
    frame: FaceFrame,
    mouth_width: float,
    upper_jaw: np.ndarray,
) -> np.ndarray:
    """What rounding adds to the jaw drop at mouth_open = 1, mouth_wide = -1 (the rig weighs
    it by their product; see the module docstring): the jaw drop with the rounded corner and
    upper-lip shares, minus the plain one, and the corners' way back out."""
    plain = jaw_basis(lm, u, s, frame, mouth_width, upper_jaw)
    rounded = jaw_basis(
        lm,
        u,
        s,
        frame,
        mouth_width,
        upper_jaw,
        corner=ROUND_JAW_CORNER,
        lift=ROUND_JAW_LIFT,
        corner_power=2.0,
    )
    um, sm, half = mouth_coords(lm, frame, u, s)
    band, _, _ = _lip_band(lm, frame, um, sm, half)
    widen = ROUND_JAW_WIDEN * _gather(um, half, reach=1.2) * band
    out: np.ndarray = rounded - plain + _lift(widen[:, None] * frame.e[None, :])
    return out


def _lip_band(
    lm: np.ndarray, frame: FaceFrame, um: np.ndarray, sm: np.ndarray, half: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertical membership of the lips (1 between the outer contours, steep falloff above
    toward the nose, slower below toward the chin), the split line between the lips, and
    how far across the lips each point is (1 in the middle, 0 at and beyond the corners)."""
    top = contour(lm, tp.LIPS_UPPER_OUTER, frame, um)
    bottom = contour(lm, tp.LIPS_LOWER_OUTER, frame, um)
    split = 0.5 * (
        contour(lm, tp.LIPS_UPPER_INNER, frame, um) + contour(lm, tp.LIPS_LOWER_INNER, frame, um)
    )
    above = 1.0 - smoothstep((top - sm) / (0.45 * half))
    below = 1.0 - smoothstep((sm - bottom) / (0.6 * half))
    band = np.where(sm < top, above, np.where(sm > bottom, below, 1.0))
    middle = np.clip(1.0 - (um / half) ** 2, 0.0, 1.0)
    return band, split, middle


def spread_basis(
    lm: np.ndarray, u: np.ndarray, s: np.ndarray, frame: FaceFrame, mouth_width: float
) -> np.ndarray:
    um, sm, half = mouth_coords(lm, frame, u, s)
    band, _, middle = _lip_band(lm, frame, um, sm, half)
    lateral = _gather(um, half, reach=1.4)
    out = _lift((SPREAD_FRAC * lateral * band)[:, None] * frame.e[None, :])
    out[:, 2] = 0.04 * mouth_width * band * middle  # spread lips flatten back a little
    return out


def round_basis(
    lm: np.ndarray,
    u: np.ndarray,
    s: np.ndarray,
    frame: FaceFrame,
    mouth_width: float,
) -> np.ndarray:
    """Rounded, protruded lips at mouth_wide = -1 (see the module docstring): the opening
    becomes an oval. Each of the four lip contours gets its own vertical travel across the
    mouth; a vertex takes the travel of the contours around it, by where it lies between
    them, and the band and ``_near`` fade it out into the skin. Between the inner contours
    (the photo's teeth edge) a vertex follows the upper lip and rises with the lower one
    where the corners close: the teeth hide under the lips at the sides."""
    um, sm, half = mouth_coords(lm, frame, u, s)
    band, _, middle = _lip_band(lm, frame, um, sm, half)
    top = contour(lm, tp.LIPS_UPPER_OUTER, frame, um)
    bottom = contour(lm, tp.LIPS_LOWER_OUTER, frame, um)
    upper_in = contour(lm, tp.LIPS_UPPER_INNER, frame, um)
    lower_in = np.maximum(contour(lm, tp.LIPS_LOWER_INNER, frame, um), upper_in)
    r = np.clip(np.abs(um) / half, 0.0, 1.0)
    inner_half = _inner_half(lm, frame, half)
    middle_in = np.clip(1.0 - (um / inner_half) ** 2, 0.0, 1.0)

    # Travel of each contour (down > 0, fractions of the mouth width). The corners come
    # down (the smile relaxes), the upper lip arches up in the middle, the lower lip parts
    # down, the outer contours evert, and toward the corners the inner contours close on
    # each other (the lips thicken there, the opening narrows to an oval).
    drop = ROUND_CORNER_DROP * r * r
    closing = ROUND_CLOSE * (lower_in - upper_in) / mouth_width
    closing = closing * smoothstep((r - 0.2) / 0.6)
    arch = ROUND_ARCH_SHARE * ROUND_GAP_FRAC
    part = (1.0 - ROUND_ARCH_SHARE) * ROUND_GAP_FRAC
    up_outer = drop - (arch + EVERT_FRAC) * middle
    up_inner = drop - arch * middle_in + ROUND_CLOSE_UPPER * closing
    lo_inner = drop + part * middle_in - (1.0 - ROUND_CLOSE_UPPER) * closing
    lo_outer = drop + (part + EVERT_FRAC) * middle

    upper = sm <= upper_in
    lower = sm >= lower_in
    t_up = np.clip((sm - top) / np.maximum(upper_in - top, 1e-6), 0.0, 1.0)
    t_lo = np.clip((bottom - sm) / np.maximum(bottom - lower_in, 1e-6), 0.0, 1.0)
    t_mid = np.clip((sm - upper_in) / np.maximum(lower_in - upper_in, 1e-6), 0.0, 1.0)
    vertical = np.where(
        upper,
        up_outer + t_up * (up_inner - up_outer),
        np.where(
            lower,
            lo_outer + t_lo * (lo_inner - lo_outer),
            # The teeth edge (rig: 90 % of the way down the gap) rises fully with it.
            up_inner + np.clip(t_mid / 0.9, 0.0, 1.0) * np.minimum(lo_inner - up_inner, 0.0),
        ),
    )
    fade = band * _near(um, half)
    vertical = vertical * mouth_width * fade
    gather = _gather(um, half, reach=1.2)
    lateral = -ROUND_FRAC * gather * band
    out = _lift(lateral[:, None] * frame.e[None, :] + vertical[:, None] * frame.down[None, :])
    out[:, 2] = -PROTRUDE_FRAC * mouth_width * band * (0.35 + 0.65 * middle) * _near(um, half)
    return out


def _inner_half(lm: np.ndarray, frame: FaceFrame, half: float) -> float:
    """Half the distance between the inner mouth corners, mouth coordinates."""
    u, s = frame.uv(lm[list(tp.INNER_MOUTH_CORNERS), :2])
    um, _, _ = mouth_coords(lm, frame, u, s)
    return max(float(np.abs(um).mean()), 0.25 * half)


def _gather(um: np.ndarray, half: float, reach: float) -> np.ndarray:
    """Lateral displacement profile (before the gain): ``um`` itself across the lips, then
    back to 0 by ``reach`` half-widths beyond the corners (monotone in |um|: never folds for
    gains below 1)."""
    a = np.abs(um)
    beyond = half * (1.0 - smoothstep((a - half) / (reach * half)))
    out: np.ndarray = np.sign(um) * np.where(a <= half, a, beyond)
    return out


def _near(um: np.ndarray, half: float) -> np.ndarray:
    """1 across the lips, falling to 0 one half-width beyond the corners."""
    return 1.0 - smoothstep((np.abs(um) - half) / half)


def blink_basis(lm: np.ndarray, count: int, frame: FaceFrame) -> np.ndarray:
    """Lid closure at blink = 1, (count, 2)."""
    out = np.zeros((count, 2))
    for upper0, lower0, upper1, upper2, lower1 in EYES:
        up_u, up_s = frame.uv(lm[list(upper0), :2])
        lo_u, lo_s = frame.uv(lm[list(lower0), :2])
        ou, ol = np.argsort(up_u), np.argsort(lo_u)
        for ids, share in (
            (upper0[1:-1], 0.8),
            (upper1, 0.8 * 0.9),
            (upper2, 0.8 * 0.2),
            (lower0[1:-1], -0.2),
            (lower1, -0.2 * 0.3),
        ):
            q, _ = frame.uv(lm[list(ids), :2])
            gap = _lid_gap(q, up_u[ou], up_s[ou], lo_u[ol], lo_s[ol])
            out[list(ids)] = (share * gap)[:, None] * frame.down[None, :]
    return out


def _lid_gap(
    q: np.ndarray, up_u: np.ndarray, up_s: np.ndarray, lo_u: np.ndarray, lo_s: np.ndarray
) -> np.ndarray:
    return np.asarray(np.maximum(np.interp(q, lo_u, lo_s) - np.interp(q, up_u, up_s), 0.0))
