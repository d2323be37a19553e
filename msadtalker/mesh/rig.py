"""The per-avatar deformable mesh: vertices, triangles, weights and motion bases.

Built once per (image, landmarks); everything a frame needs is then a few small array ops.

Vertices
    * the 468 face-mesh landmarks (3-D, pixels);
    * when the photo's lips are apart (teeth showing), a "teeth edge" row just above the
      lower lip that moves with the UPPER jaw, so the photo's teeth stay with the upper lip;
    * anchors: rings of 48 points around a head ellipse (skull, hair, ears, neck) outside the
      face, and points on the image border. An anchor's head weight ``w`` is 1 inside the
      head ellipse and falls smoothly (smoothstep in the ellipse's normalised radius) to 0
      at ``FADE_OUT`` times its size, ``FADE_OUT_BELOW`` under the chin so that collars and
      shoulders stay put. Every weight also fades to 0 within 6 % of the image size of the
      border, and each vertex's motion is capped at its distance to the border divided by
      ``BORDER_SLACK``: the border never moves and the band next to it cannot fold.

Triangles
    Delaunay triangulation of the rest layout. Its convex hull is the image rectangle, so
    every pixel lies in exactly one triangle. Triangles spanning the lid openings and the lip
    gap are "collapsible" (a closed eye squeezes them to nothing, an open jaw stretches them
    without bound; the painted mouth covers the latter).

Motion of a vertex for controls (pitch, yaw, roll, open, wide, blink)
    p' = p + open J + max(wide, 0) S + max(-wide, 0) (Q + open K) + blink B
                                                     (expression, 3-D, in the photo's frame)
    P  = R (p' - pivot) + pivot                      (3-D rotation, orthographic)
    q  = p_xy + w * (P_xy - p_xy)                    (fade toward the body and the border)

    The bases (``expression``): ``J`` jaw drop, ``S`` spread lips ("ee"), ``Q`` rounded and
    protruded lips ("oo"; its depth shows when the head turns), ``K`` what rounding changes
    in the jaw drop (an open rounded mouth is an oval), ``B`` blink. A last safety
    net smooths the displacement around any triangle that would still flip.

Depth
    Landmarks keep MediaPipe's z, relaxed where the mesh wraps around the cheeks (see
    ``MAX_DEPTH_SLOPE``). Anchors take the depth of the nearest silhouette landmark, blended
    toward the head's side depth ``z_side`` as they approach the head ellipse, and
    ``z_side`` beyond it. The pivot sits at mouth height in the middle of the face, at
    ``z_side`` (about where the neck turns the head). With orthographic projection a yaw
    therefore moves the nose most and the head's outline barely, as a real head does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from msadtalker.avatar import topology as tp
from msadtalker.mesh import expression as ex
from msadtalker.mesh.expression import OPEN_FRAC
from msadtalker.mesh.face_frame import FaceFrame

__all__ = ["OPEN_FRAC", "Deformed", "FaceFrame", "MeshRig", "build_rig"]

FADE_OUT = 1.85  # head weight reaches 0 at this normalised head-ellipse radius...
FADE_OUT_BELOW = 1.5  # ...and at this one straight below the chin (the neck and collar)
RING_RADII = (0.62, 0.78, 0.9, 1.0, 1.12, 1.26, 1.42, 1.6, 1.85, 2.2, 2.7, 3.4, 4.4, 6.0)
RING_POINTS = 48
# Largest depth gradient |grad z| kept on any triangle. A rotation tilting the view by theta
# folds a triangle steeper than 1 / sin(theta); the face mesh wraps around the cheeks (points
# 1 px apart in the picture, 40 px apart in depth), so depth is relaxed to this gradient:
# fold-free for head tilts up to ~27 degrees.
MAX_DEPTH_SLOPE = 2.2
# A vertex may move at most (distance to the image border) / BORDER_SLACK, so the band
# between a moving vertex and the fixed border can never fold.
BORDER_SLACK = 1.5


smoothstep = ex.smoothstep


@dataclass(frozen=True)
class HeadEllipse:
    """Two-half ellipse in face coordinates: centre (u_c, s_c), lateral semi-axis ``a``,
    ``b_top`` above the centre and ``b_bottom`` below it."""

    u_c: float
    s_c: float
    a: float
    b_top: float
    b_bottom: float

    def radius(self, u: np.ndarray, s: np.ndarray) -> np.ndarray:
        b = np.where(s < self.s_c, self.b_top, self.b_bottom)
        return np.hypot((u - self.u_c) / self.a, (s - self.s_c) / b)


@dataclass(frozen=True)
class Deformed:
    """One frame's mesh: ``q`` (V, 2) vertex positions, ``corners`` (T, 3, 2) the positions
    of each triangle's corners, ``edges`` (T, 2, 2) its edges b - a and c - a, ``det``
    (T,) twice each triangle's signed area."""

    q: np.ndarray
    corners: np.ndarray
    edges: np.ndarray
    det: np.ndarray


@dataclass(frozen=True)
class MeshRig:
    """See the module docstring. V vertices, T triangles; per-vertex arrays float64."""

    width: int
    height: int
    rest: np.ndarray  # (V, 3) float64 rest positions (x, y, z), pixels (float32-exact x, y)
    weight: np.ndarray  # (V,) head weight in [0, 1]
    jaw: np.ndarray  # (V, 3) displacement at mouth_open = 1
    spread: np.ndarray  # (V, 3) displacement at mouth_wide = +1
    round: np.ndarray  # (V, 3) displacement at mouth_wide = -1
    rounded_jaw: np.ndarray  # (V, 3) added at mouth_open = 1 times mouth_wide = -1
    blink: np.ndarray  # (V, 2) displacement at blink = 1
    pivot: np.ndarray  # (3,)
    border_distance: np.ndarray  # (V,) distance to the image border, pixels
    border_cap: np.ndarray  # (V,) largest motion allowed, border_distance / BORDER_SLACK
    edges: np.ndarray  # (E, 2) int32, every mesh edge in both directions
    collapsible: np.ndarray  # (T,) bool, lid-opening and lip-gap triangles
    triangles: np.ndarray  # (T, 3) int32
    neighbours: np.ndarray  # (T, 3) int32, triangle across the edge opposite vertex k; -1
    teeth_ids: np.ndarray  # (K,) int32 teeth-edge vertices (empty: closed mouth in the photo)
    rest_det: np.ndarray  # (T,) twice the rest area of each triangle (> 0)
    rest_edges: np.ndarray  # (T, 6) rest corner a, b - a, c - a (x, y interleaved)
    frame: FaceFrame
    mouth_width: float  # rest distance between the outer mouth corners, pixels
    eye_distance: float

    @property
    def num_landmarks(self) -> int:
        return tp.NUM_LANDMARKS

    def vertices(
        self,
        rotation: np.ndarray,
        mouth_open: float,
        mouth_wide: float,
        blink: float,
    ) -> np.ndarray:
        """(V, 2) float64 vertex positions for one frame (see the module docstring)."""
        return self.deform(rotation, mouth_open, mouth_wide, blink).q

    def deform(
        self,
        rotation: np.ndarray,
        mouth_open: float,
        mouth_wide: float,
        blink: float,
    ) -> Deformed:
        """The frame's vertex positions with their triangles' corners, edges and signed
        areas (computed for the fold check anyway; the inverse warp needs them too)."""
        moved = self._centred
        if mouth_open or mouth_wide or blink:
            spread, rounded = max(mouth_wide, 0.0), max(-mouth_wide, 0.0)
            weights = np.array([mouth_open, spread, rounded, blink, mouth_open * rounded])
            moved = moved + (self._expression @ weights).reshape(-1, 3)
        # Only x, y of R (p' - pivot) + pivot are needed (orthographic projection).
        d = moved @ rotation[:2].T
        d += self._pivot_offset
        d *= self._weight2
        # Near the border, cap the motion by the room left (see BORDER_SLACK).
        length = np.hypot(d[:, 0], d[:, 1])
        over = np.flatnonzero(length > self.border_cap)
        if over.size:
            d[over] *= (self.border_cap[over] / length[over])[:, None]
        mesh = self.mesh(self._rest_xy + d)
        if (mesh.det < self._fold_limit).any():
            mesh = self.mesh(self._rest_xy + self._unfold(d))
        return mesh

    def mesh(self, q: np.ndarray) -> Deformed:
        """Triangle corners, edges and signed areas of vertex positions ``q`` (V, 2)."""
        corners = np.take(q, self._corner_ids, axis=0).reshape(-1, 3, 2)
        edges = corners[:, 1:] - corners[:, :1]
        det = edges[:, 0, 0] * edges[:, 1, 1]
        det -= edges[:, 0, 1] * edges[:, 1, 0]
        return Deformed(q, corners, edges, det)

    @cached_property
    def rest_columns(self) -> np.ndarray:
        """(6, T) float64 ``rest_edges`` as contiguous columns."""
        return np.ascontiguousarray(self.rest_edges.T, dtype=np.float64)

    # Per-rig constants of ``deform`` (cached on first use; the rig is immutable).
    @cached_property
    def _centred(self) -> np.ndarray:
        centred: np.ndarray = self.rest - self.pivot
        return centred

    @cached_property
    def _expression(self) -> np.ndarray:
        """(3 V, 5): the jaw, spread, round, blink and rounded-jaw displacements (x, y, z)
        as columns, in the order of ``deform``'s weights."""

        def lifted(xy: np.ndarray) -> np.ndarray:
            return np.column_stack([xy, np.zeros(len(xy))]).ravel()

        columns = [
            self.jaw.ravel(),
            self.spread.ravel(),
            self.round.ravel(),
            lifted(self.blink),
            self.rounded_jaw.ravel(),
        ]
        return np.stack(columns, axis=1)

    @cached_property
    def _pivot_offset(self) -> np.ndarray:
        offset: np.ndarray = self.pivot[:2] - self.rest[:, :2]
        return offset

    @cached_property
    def _weight2(self) -> np.ndarray:
        return np.ascontiguousarray(self.weight[:, None])

    @cached_property
    def _rest_xy(self) -> np.ndarray:
        return np.ascontiguousarray(self.rest[:, :2])

    @cached_property
    def _corner_ids(self) -> np.ndarray:
        return np.ascontiguousarray(self.triangles.ravel())

    @cached_property
    def _fold_limit(self) -> np.ndarray:
        """A triangle below this signed area has folded (collapsible ones never count)."""
        limit: np.ndarray = np.where(self.collapsible, -np.inf, 0.05 * self.rest_det)
        return limit

    def _unfold(self, d: np.ndarray, rounds: int = 12) -> np.ndarray:
        """Smooth the displacement around any triangle that would flip (a safety net: the
        rig's weights and depths avoid folds at the supported amplitudes)."""
        p = self.rest[:, :2]
        tri = self.triangles
        src, dst = self.edges[:, 0], self.edges[:, 1]
        count = np.maximum(np.bincount(src, minlength=len(p)), 1).astype(np.float64)
        fixed = self.border_distance <= 0.0
        for _ in range(rounds):
            area = _signed_area(p + d, tri)
            bad = (area < 0.05 * self.rest_det) & ~self.collapsible
            if not bad.any():
                break
            flagged = np.zeros(len(p), dtype=bool)
            flagged[tri[bad].ravel()] = True
            mean = (
                np.stack(
                    [np.bincount(src, weights=d[dst, k], minlength=len(p)) for k in range(2)],
                    axis=1,
                )
                / count[:, None]
            )
            d[flagged] = 0.5 * d[flagged] + 0.5 * mean[flagged]
            d[fixed] = 0.0
        return d


def build_rig(landmarks: np.ndarray, width: int, height: int) -> MeshRig:
    """The rig for an image of ``width`` x ``height`` with ``landmarks`` (468, 3) in its pixels."""
    lm = landmarks.astype(np.float64)
    eye_l, eye_r = tp.eye_centres(lm)
    eye_distance = float(np.hypot(*(eye_r - eye_l)))
    e = (eye_r - eye_l) / max(eye_distance, 1e-9)
    frame = FaceFrame(origin=(eye_l + eye_r) / 2.0, e=e, down=np.array([-e[1], e[0]]))
    u, s = frame.uv(lm[:, :2])
    corners = lm[list(tp.MOUTH_CORNERS), :2]
    mouth_width = float(np.hypot(*(corners[1] - corners[0])))

    sil = np.array(tp.SILHOUETTE)
    face_h = float(s[tp.CHIN] - s[tp.FOREHEAD_TOP])
    u_lo, u_hi = float(u[sil].min()), float(u[sil].max())
    head = HeadEllipse(
        u_c=(u_lo + u_hi) / 2.0,
        s_c=0.0,  # eye level
        a=0.5 * (u_hi - u_lo) * 1.12,
        b_top=float(-s[tp.FOREHEAD_TOP]) + 0.42 * face_h,
        b_bottom=float(s[tp.CHIN]) + 0.03 * face_h,
    )
    teeth = _teeth_edge(lm, frame, mouth_width)
    inner = np.concatenate([lm, teeth], axis=0)
    n = len(inner)
    teeth_ids = np.arange(len(lm), n, dtype=np.int32)
    anchors = _anchor_points(inner, frame, head, width, height, face_h)
    a_u, a_s = frame.uv(anchors)
    rho = head.radius(a_u, a_s)
    # Shorter fade below the chin: the neck bends, the collar and shoulders stay put.
    below = smoothstep((a_s - head.s_c) / np.maximum(rho * head.b_bottom, 1e-9))
    fade_out = FADE_OUT + (FADE_OUT_BELOW - FADE_OUT) * below
    a_weight = 1.0 - smoothstep((rho - 1.0) / (fade_out - 1.0))

    # Triangulate the float32 positions the rig stores, so that rebuilding the triangulation
    # from ``rig.rest`` (point location in ``warp``) gives exactly the same simplices.
    rest = np.concatenate([inner, np.column_stack([anchors, np.zeros(len(anchors))])], axis=0)
    rest = rest.astype(np.float32).astype(np.float64)
    tri = Delaunay(rest[:, :2])
    triangles = tri.simplices.astype(np.int32)
    neighbours = tri.neighbors.astype(np.int32)
    # Orient every triangle counter-clockwise in (x, y) so signed areas compare across frames.
    flip = _signed_area(rest[:, :2], triangles) < 0
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    neighbours[flip] = neighbours[flip][:, [0, 2, 1]]
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = np.unique(np.concatenate([edges, edges[:, ::-1]]), axis=0).astype(np.int32)

    # Depth: relax the face mesh's wrap-around first, then give the anchors depths that
    # continue it, and relax once more across the seam between the two.
    face_tri = triangles[(triangles < n).all(axis=1)]
    z_face = _limit_gradient(inner[:, :2], inner[:, 2], face_tri, MAX_DEPTH_SLOPE)
    z_side = float(z_face[list(tp.CHEEK_EXTREMES)].mean())
    relaxed = np.column_stack([inner[:, :2], z_face])
    rest[n:, 2] = _anchor_depth(relaxed, sil, anchors, rho, head, frame, z_side)
    rest[:n, 2] = z_face
    rest[:, 2] = _limit_gradient(rest[:, :2], rest[:, 2], triangles, MAX_DEPTH_SLOPE)

    weight = np.concatenate([np.ones(n), a_weight])
    margin = max(2.0, 0.06 * min(width, height))
    border = np.minimum.reduce(
        [rest[:, 0] + 0.5, width - 0.5 - rest[:, 0], rest[:, 1] + 0.5, height - 0.5 - rest[:, 1]]
    )
    weight = weight * smoothstep(border / margin)

    all_u, all_s = frame.uv(rest[:, :2])
    jaw = ex.jaw_basis(lm, all_u, all_s, frame, mouth_width, teeth_ids)
    spread = ex.spread_basis(lm, all_u, all_s, frame, mouth_width)
    rounded = ex.round_basis(lm, all_u, all_s, frame, mouth_width)
    rounded_jaw = ex.rounded_jaw_basis(lm, all_u, all_s, frame, mouth_width, teeth_ids)
    blink = ex.blink_basis(lm, len(rest), frame)

    mouth_s = float(s[list(tp.MOUTH_CORNERS)].mean())
    pivot_xy = frame.xy(np.array([head.u_c]), np.array([mouth_s]))[0]
    pivot = np.array([pivot_xy[0], pivot_xy[1], z_side])

    # Triangles spanning the lid opening or the lip gap are MEANT to collapse or stretch
    # without bound (blink, jaw drop); the fold check ignores them.
    collapsible = np.zeros(len(triangles), dtype=bool)
    mouth_group = np.concatenate([np.array(tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER), teeth_ids])
    for group in (
        np.array(tp.RIGHT_EYE_UPPER0 + tp.RIGHT_EYE_LOWER0),
        np.array(tp.LEFT_EYE_UPPER0 + tp.LEFT_EYE_LOWER0),
        mouth_group,
    ):
        collapsible |= np.isin(triangles, group).all(axis=1)

    return MeshRig(
        width=width,
        height=height,
        rest=rest,
        weight=weight,
        jaw=jaw,
        spread=spread,
        round=rounded,
        rounded_jaw=rounded_jaw,
        blink=blink,
        pivot=pivot,
        border_distance=np.maximum(border, 0.0),
        border_cap=np.maximum(border, 0.0) / BORDER_SLACK,
        edges=edges,
        collapsible=collapsible,
        triangles=triangles,
        neighbours=neighbours,
        teeth_ids=teeth_ids,
        rest_det=_signed_area(rest[:, :2], triangles),
        rest_edges=_rest_edges(rest[:, :2], triangles).astype(np.float32),
        frame=frame,
        mouth_width=mouth_width,
        eye_distance=eye_distance,
    )


def _teeth_edge(lm: np.ndarray, frame: FaceFrame, mouth_width: float) -> np.ndarray:
    """Vertices along the lower edge of what the photo shows inside an OPEN mouth.

    When the photo's lips are apart (teeth showing), these points, placed at 90 % of the way
    from the upper to the lower inner lip and moving with the upper jaw, keep the photo's own
    teeth attached to the upper lip while the jaw drops; only the band below them stretches
    (and is painted over). Returns (K, 3), empty for a closed mouth.
    """
    upper = lm[list(tp.LIPS_UPPER_INNER)]
    lower = lm[list(tp.LIPS_LOWER_INNER[1:-1])]
    uu, us = frame.uv(upper[:, :2])
    lu, ls = frame.uv(lower[:, :2])
    order = np.argsort(uu)
    up_s = np.interp(lu, uu[order], us[order])
    gap = ls - up_s
    if np.median(gap[2:-2]) < 0.04 * mouth_width:
        return np.zeros((0, 3))
    s_edge = up_s + 0.9 * np.maximum(gap, 0.0)
    xy = frame.xy(lu, s_edge)
    return np.column_stack([xy, lower[:, 2]])


def _rest_edges(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    return np.concatenate([a, b - a, c - a], axis=1)


def _signed_area(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    area: np.ndarray = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
        c[:, 0] - a[:, 0]
    )
    return area


def _limit_gradient(xy: np.ndarray, z: np.ndarray, tri: np.ndarray, limit: float) -> np.ndarray:
    """Depths relaxed until no triangle's depth gradient |grad z| exceeds ``limit``.

    A triangle whose depth plane has gradient g folds under a rotation tilting the view by
    theta once |g| sin(theta) > 1; edges alone do not bound g for thin triangles, hence the
    per-triangle test. Each violating triangle proposes to flatten its plane about its mean
    depth just enough; a vertex takes the mean of its proposals (vectorised Jacobi steps).
    """
    z = z.astype(np.float64).copy()
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    n = len(z)
    for _ in range(600):
        zt = z[tri]
        d1, d2 = zt[:, 1] - zt[:, 0], zt[:, 2] - zt[:, 0]
        gx = (d1 * e2[:, 1] - d2 * e1[:, 1]) / det
        gy = (e1[:, 0] * d2 - e2[:, 0] * d1) / det
        grad = np.hypot(gx, gy)
        viol = grad > limit * 1.001
        if not viol.any():
            break
        shrink = limit / grad[viol] - 1.0
        zv = zt[viol]
        delta = shrink[:, None] * (zv - zv.mean(axis=1, keepdims=True))
        ids = tri[viol].ravel()
        total = np.bincount(ids, weights=delta.ravel(), minlength=n)
        hits = np.maximum(np.bincount(ids, minlength=n), 1)
        z += total / hits
    return z


def _anchor_points(
    lm: np.ndarray, frame: FaceFrame, head: HeadEllipse, width: int, height: int, face_h: float
) -> np.ndarray:
    """Ring points around the head ellipse plus the image border, outside the face hull."""
    angles = np.linspace(0.0, 2.0 * np.pi, RING_POINTS, endpoint=False)
    pts = []
    for k, rho in enumerate(RING_RADII):
        phase = angles + (np.pi / RING_POINTS) * (k % 2)  # stagger rings: better triangles
        cos, sin = np.cos(phase), np.sin(phase)
        b = np.where(sin < 0, head.b_top, head.b_bottom)
        pts.append(frame.xy(head.u_c + rho * head.a * cos, head.s_c + rho * b * sin))
    ring = np.concatenate(pts)

    # Keep ring points inside the image, away from its border and outside the face.
    step = max(8.0, face_h * 0.04)
    inside = (
        (ring[:, 0] > -0.5 + step)
        & (ring[:, 0] < width - 0.5 - step)
        & (ring[:, 1] > -0.5 + step)
        & (ring[:, 1] < height - 0.5 - step)
    )
    ring = ring[inside]
    ring = ring[_outside_hull(ring, lm[:, :2], dilate=0.04 * face_h)]

    n_x = max(2, int(np.ceil(width / max(24.0, min(width, height) / 12.0))))
    n_y = max(2, int(np.ceil(height / max(24.0, min(width, height) / 12.0))))
    xs = np.linspace(-0.5, width - 0.5, n_x + 1)
    ys = np.linspace(-0.5, height - 0.5, n_y + 1)
    border = np.concatenate(
        [
            np.column_stack([xs, np.full_like(xs, -0.5)]),
            np.column_stack([xs, np.full_like(xs, height - 0.5)]),
            np.column_stack([np.full_like(ys[1:-1], -0.5), ys[1:-1]]),
            np.column_stack([np.full_like(ys[1:-1], width - 0.5), ys[1:-1]]),
        ]
    )

    # Thin out ring points crowding each other or the landmarks (slivers fold easily).
    kept: list[np.ndarray] = []
    tree = cKDTree(np.concatenate([lm[:, :2], border]))
    min_gap = 0.35 * step
    for point in ring:
        if tree.query(point)[0] < min_gap:
            continue
        if kept and np.min(np.hypot(*(np.array(kept) - point).T)) < min_gap:
            continue
        kept.append(point)
    ring = np.array(kept).reshape(-1, 2)
    return np.concatenate([ring, border])


def _outside_hull(points: np.ndarray, hull_points: np.ndarray, dilate: float) -> np.ndarray:
    """True for points farther than ``dilate`` outside the convex hull of ``hull_points``."""
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    hull = Delaunay(hull_points).convex_hull  # (F, 2) vertex pairs
    a, b = hull_points[hull[:, 0]], hull_points[hull[:, 1]]
    centre = hull_points.mean(axis=0)
    normal = np.column_stack([b[:, 1] - a[:, 1], a[:, 0] - b[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    # Orient every edge normal outward (away from the centroid).
    outward = np.sign(((a - centre) * normal).sum(axis=1))
    normal *= outward[:, None]
    dist = ((points[:, None, :] - a[None]) * normal[None]).sum(axis=2)  # (N, F)
    outside: np.ndarray = dist.max(axis=1) > dilate
    return outside


def _anchor_depth(
    lm: np.ndarray,
    sil: np.ndarray,
    anchors: np.ndarray,
    rho: np.ndarray,
    head: HeadEllipse,
    frame: FaceFrame,
    z_side: float,
) -> np.ndarray:
    su, ss = frame.uv(lm[sil, :2])
    sil_rho = head.radius(su, ss)
    nearest = cKDTree(lm[sil, :2]).query(anchors)[1]
    start = sil_rho[nearest]
    t = smoothstep((rho - start) / np.maximum(1.0 - start, 1e-3))
    depth: np.ndarray = lm[sil[nearest], 2] * (1.0 - t) + z_side * t
    return depth
