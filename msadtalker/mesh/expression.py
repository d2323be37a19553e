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
  evert (more red shows above and below, the lip line parts in the middle into a small
  round opening) and push forward by ``PROTRUDE_FRAC`` of the mouth width. The falloff is
  steep above the upper lip, so the nose does not narrow with the mouth.
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
SPREAD_FRAC = 0.16  # mouth-corner travel at mouth_wide = +1, fraction of half the width
ROUND_FRAC = 0.40  # mouth-corner travel at mouth_wide = -1, fraction of half the width
ROUND_GAP_FRAC = 0.03  # lip parting in the middle at mouth_wide = -1, fraction of the width
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
) -> np.ndarray:
    """Jaw-drop displacement at mouth_open = 1 (see the module docstring).

    Membership m (share of the full drop) as a smooth field in mouth coordinates: lower lip 1
    in the middle tapering to ``corner`` at the corners; chin and jaw 1, tapering toward the
    jaw angles; cheeks above the corner line little; upper lip lifts slightly in the middle
    and follows the corners near them.
    """
    corner = 0.35
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
    m = np.where(upper, -0.12 * (1.0 - r * r) + corner * r**4, m)
    m[list(tp.MOUTH_CORNERS + tp.INNER_MOUTH_CORNERS)] = corner
    # Teeth-edge vertices belong to the upper jaw: they move as the upper lip above them.
    m[upper_jaw] = (-0.12 * (1.0 - r * r) + corner * r**4)[upper_jaw]
    return _lift(OPEN_FRAC * mouth_width * m[:, None] * frame.down[None, :])


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
    lm: np.ndarray, u: np.ndarray, s: np.ndarray, frame: FaceFrame, mouth_width: float
) -> np.ndarray:
    um, sm, half = mouth_coords(lm, frame, u, s)
    band, split, middle = _lip_band(lm, frame, um, sm, half)
    top = contour(lm, tp.LIPS_UPPER_OUTER, frame, um)
    bottom = contour(lm, tp.LIPS_LOWER_OUTER, frame, um)
    lateral = -ROUND_FRAC * _gather(um, half, reach=1.2) * band
    # Vertical: each lip moves away from the split line, most in the middle: the lip line
    # parts (ROUND_GAP_FRAC) and the outer contours evert (EVERT_FRAC), fading above and
    # below the lips with the band.
    upper = sm <= split
    inner_share = np.where(
        upper,
        np.clip((sm - top) / np.maximum(split - top, 1e-6), 0.0, 1.0),
        np.clip((bottom - sm) / np.maximum(bottom - split, 1e-6), 0.0, 1.0),
    )
    travel = EVERT_FRAC + (0.5 * ROUND_GAP_FRAC - EVERT_FRAC) * inner_share
    vertical = np.where(upper, -1.0, 1.0) * travel * mouth_width * middle * band
    out = _lift(lateral[:, None] * frame.e[None, :] + vertical[:, None] * frame.down[None, :])
    out[:, 2] = -PROTRUDE_FRAC * mouth_width * band * (0.35 + 0.65 * middle) * _near(um, half)
    return out


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
