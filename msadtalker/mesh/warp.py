"""Backward map of a piecewise-affine mesh warp, fast enough for hundreds of frames/s.

For ``cv2.remap`` we need, for every DESTINATION pixel x, the source point p with
``warp(p) = x``. With a fixed triangulation the warp is affine inside each triangle, so the
exact answer is: find the deformed triangle containing x, take its barycentric coordinates
there, and apply them to the triangle's rest (source) corners.

Why not the cheap shortcut (interpolate the vertex displacements d over the REST layout and
sample p = x - d(x))? Its error is about |grad d| * |d|: a 10 degree head turn moves the face
by ~25 px at 512 px and shears it by ~0.2, so the face lands ~5 px off; worse, at the lips
and eyelids grad d is large (a closed lip line opens by 30+ px), where the shortcut smears
or doubles the lips. Measured on the bundled avatar at 512 px and the amplitude limits
(``approx_map_error``, tests/test_mesh_renderer.py): the shortcut is off by 9-13 px at the
99th percentile (up to 28 px at the lips); the scheme below by 0.35-0.45 px at the 99th
percentile, and by nothing where it is refined per pixel.

What we do instead, per frame (no Python loop over pixels or triangles):

1. per triangle: the affine map destination -> barycentric coordinates of the DEFORMED
   triangle (a few ops on ~1.5k triangles);
2. on a coarse grid (every ``step`` px, ~4 px at 512) over the region that can move: locate
   each grid point's deformed triangle by a "visibility walk" (step across the edge with the
   most negative barycentric coordinate until inside), compiled and row by row, each point
   starting in the triangle its neighbour ended in (``walk.walk_rows``: 0-1 steps
   typically); then apply the barycentrics to the triangle's rest corners. This is the EXACT
   inverse at the grid points. The few points that walk cannot place are walked again by
   the numpy ``locate`` from the first-order guess x - d(x);
3. upsample the coarse map (absolute source coordinates, smooth) bilinearly to full
   resolution (one ``cv2.resize``) and ramp it to the identity over the half cell at the
   region's edges (where the motion does fall to zero);
4. where the warp has kinks at a finer scale than the grid (lips while the mouth opens,
   eyelids while blinking), redo step 2 at every pixel of a small box.

The coarse grid's only error is the bilinear interpolation of a piecewise-affine map between
grid points, a fraction of a pixel (measured by ``map_error`` against the exact per-pixel map).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from scipy.spatial import Delaunay

from msadtalker.mesh.rig import Deformed, MeshRig
from msadtalker.mesh.walk import EPS, walk_rows

_COLLAPSED = 1e-3  # deformed/rest area ratio below which a triangle counts as collapsed
_FAR = 1e30  # float32-safe "infinitely far" offset (see ``frame_triangles``)


@dataclass(frozen=True)
class FrameTriangles:
    """Per-frame triangle data.

    ``table``: (T, 12) float32 rows, one gather per point gives the walk and the source:

    * 0-5, (a11, a12, a21, a22, ox, oy): destination -> barycentric (l1, l2) = A (x - o) in
      the DEFORMED triangle (o its first corner);
    * 6-11, (m11, m12, m21, m22, sx0, sy0): destination -> source, s = s0 + M (x - o)
      (the barycentrics applied to the rest corners, composed; relative to a corner, so a
      nearly collapsed triangle's large M costs no precision).

    For triangles collapsed to (nearly) zero area in this frame (closed lids, closed lips)
    columns 0-5 are replaced by a row that puts every point far outside the edge opposite
    the corner facing their longest edge, so the walk crosses that edge instead of
    trusting their ill-conditioned barycentrics. ``source``: (T, 6) rest corner a and edges
    b - a, c - a (source point a + l1 (b - a) + l2 (c - a); for points clamped into a
    triangle).
    """

    table: np.ndarray
    source: np.ndarray
    collapsed: np.ndarray  # (T,) bool

    @property
    def bary(self) -> np.ndarray:
        """(T, 6) destination -> barycentric affine (a11, a12, a21, a22, ox, oy)."""
        return self.table[:, :6]


def frame_triangles(rig: MeshRig, q: np.ndarray, mesh: Deformed | None = None) -> FrameTriangles:
    """Per-triangle data for deformed vertex positions ``q`` (V, 2); ``mesh``: the same
    frame from ``MeshRig.deform`` (its corners and areas are then not computed again)."""
    if mesh is None:
        mesh = rig.mesh(q)
    corners, edges, det = mesh.corners, mesh.edges, mesh.det
    collapsed = det <= _COLLAPSED * rig.rest_det
    any_collapsed = bool(collapsed.any())
    inv = 1.0 / (np.where(collapsed, 1.0, det) if any_collapsed else det)
    # A = [[e2y, -e2x], [-e1y, e1x]] / det: destination -> barycentric (l1, l2).
    neg = -inv
    a11 = edges[:, 1, 1] * inv
    a12 = edges[:, 1, 0] * neg
    a21 = edges[:, 0, 1] * neg
    a22 = edges[:, 0, 0] * inv
    # Destination -> source: s = a_rest + E_rest A (x - a), E_rest = [b - a, c - a] (rest).
    r = rig.rest_columns
    m11 = r[2] * a11
    m11 += r[4] * a21
    m12 = r[2] * a12
    m12 += r[4] * a22
    m21 = r[3] * a11
    m21 += r[5] * a21
    m22 = r[3] * a12
    m22 += r[5] * a22
    table = np.stack(
        [a11, a12, a21, a22, corners[:, 0, 0], corners[:, 0, 1], m11, m12, m21, m22, r[0], r[1]],
        axis=1,
        dtype=np.float32,
    )
    if any_collapsed:
        idx = np.flatnonzero(collapsed)
        e = edges[idx]
        sides = np.stack(
            [
                np.hypot(*(e[:, 1] - e[:, 0]).T),  # c - b, opposite corner 0
                np.hypot(*e[:, 1].T),  # c - a, opposite corner 1
                np.hypot(*e[:, 0].T),  # b - a, opposite corner 2
            ],
            axis=1,
        )
        table[idx, :6] = _ESCAPE_ROWS[np.argmax(sides, axis=1)]
    return FrameTriangles(table, rig.rest_edges, collapsed)


# Rows of ``bary`` for a collapsed triangle: with o = (_FAR, 0), x - o = (-_FAR, y), so the
# barycentric coordinate of the chosen corner is about -_FAR (the others 0 or +_FAR): the
# walk's "most negative coordinate" rule then always crosses the edge opposite it.
_ESCAPE_ROWS = np.array(
    [
        [-1.0, 0.0, 0.0, 0.0, _FAR, 0.0],  # l1 = +FAR, l2 = 0: l0 = -FAR
        [1.0, 0.0, 0.0, 0.0, _FAR, 0.0],  # l1 = -FAR
        [0.0, 0.0, 1.0, 0.0, _FAR, 0.0],  # l2 = -FAR
    ],
    np.float32,
)


def walk_table(neighbours: np.ndarray) -> np.ndarray:
    """(T * 4,) int32 successor table for ``locate``: entry 4 t + k is the triangle across
    the edge opposite corner k of t (t itself where that edge is the hull), 4 t + 3 is t."""
    own = np.arange(len(neighbours), dtype=np.int32)[:, None]
    table = np.concatenate([np.where(neighbours >= 0, neighbours, own), own], axis=1)
    return np.ascontiguousarray(table, dtype=np.int32).ravel()


@dataclass(frozen=True)
class Located:
    """Where ``locate`` put each point: ``t`` (int32) its deformed triangle, ``sx``, ``sy``
    (float32) its source point, ``lost`` the indices of the points the walk could not place
    (mesh folds beyond the supported amplitudes, or out of steps), whose source points are
    clamped into their last triangle (bounded, never a stray far-away pixel)."""

    t: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    lost: np.ndarray


def locate(
    ft: FrameTriangles,
    steps: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    start: np.ndarray,
    max_steps: int = 12,
) -> Located:
    """Deformed triangle containing each point (x, y) (float32) and the point's source, by
    a visibility walk from ``start`` (int32) over ``steps`` (``walk_table``): step across
    the edge with the most negative barycentric coordinate until inside.

    All points walk in lock-step, the ones still moving in compact arrays. This is the
    fallback of ``walk.walk_rows`` for the few points it cannot place, and the tests'
    reference for it: plain rather than fast.
    """
    t = np.array(start, dtype=np.int32)
    moving = np.arange(t.size)
    for _ in range(max_steps):
        tm = t[moving]
        _, _, l1, l2 = _barycentric(ft.table[tm], x[moving], y[moving])
        # Column 3 (-eps) wins when the point is inside: its successor is the triangle itself.
        lam = np.stack([1.0 - l1 - l2, l1, l2, np.full_like(l1, -EPS)], axis=1)
        nxt = steps[4 * tm + lam.argmin(axis=1)]
        went = nxt != tm
        moving = moving[went]
        if moving.size == 0:
            break
        t[moving] = nxt[went]
    dx, dy, l1, l2 = _barycentric(ft.table[t], x, y)
    lost = np.flatnonzero(np.minimum(np.minimum(1.0 - l1 - l2, l1), l2) < -EPS)
    c = ft.table[t]
    sx = (c[:, 6] * dx + c[:, 7] * dy + c[:, 10]).astype(np.float32)
    sy = (c[:, 8] * dx + c[:, 9] * dy + c[:, 11]).astype(np.float32)
    if lost.size:
        # Out of steps, stuck at the hull or on a collapsed triangle: clamped into the last
        # triangle.
        tl = t[lost]
        c = ft.table[tl, :6].astype(np.float64)
        dxl, dyl = x[lost] - c[:, 4], y[lost] - c[:, 5]
        l1c = np.clip(c[:, 0] * dxl + c[:, 1] * dyl, 0.0, 1.0)
        l2c = np.clip(c[:, 2] * dxl + c[:, 3] * dyl, 0.0, 1.0)
        total = np.maximum(l1c + l2c, 1.0)
        l1c, l2c = l1c / total, l2c / total
        src = ft.source[tl]
        sx[lost] = src[:, 0] + l1c * src[:, 2] + l2c * src[:, 4]
        sy[lost] = src[:, 1] + l1c * src[:, 3] + l2c * src[:, 5]
    return Located(t, sx, sy, lost)


def _barycentric(
    c: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dy, l1, l2) of points (x, y) in the triangles whose table rows are ``c``."""
    dx = x - c[:, 4]
    dy = y - c[:, 5]
    l1 = c[:, 0] * dx
    l1 += c[:, 1] * dy
    l2 = c[:, 2] * dx
    l2 += c[:, 3] * dy
    return dx, dy, l1, l2


@dataclass(frozen=True)
class Region:
    """Integer pixel box [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def clipped(self, other: Region) -> Region:
        return Region(
            max(self.x0, other.x0),
            max(self.y0, other.y0),
            min(self.x1, other.x1),
            min(self.y1, other.y1),
        )

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0


class InverseWarp:
    """Precomputed grids and rest rasters for one rig; per frame ``coarse`` then ``refine``.

    Maps are (H, W, 2) float32 absolute source coordinates over ``region`` (the bounding
    box of every triangle that can move; outside it the warp is the identity), ready for
    ``cv2.remap(src, map, None, ...)``.
    """

    def __init__(self, rig: MeshRig, step: int) -> None:
        self.rig = rig
        self.step = step
        self.steps = walk_table(rig.neighbours)
        moving = rig.weight > 0
        tri = rig.triangles
        touched = moving[tri].any(axis=1)
        corners = rig.rest[:, :2][tri[touched]].reshape(-1, 2)
        if corners.size:
            lo = np.floor(corners.min(axis=0)).astype(int)
            hi = np.ceil(corners.max(axis=0)).astype(int) + 1
        else:
            lo, hi = np.zeros(2, int), np.ones(2, int)
        self.region = Region(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])).clipped(
            Region(0, 0, rig.width, rig.height)
        )
        r = self.region
        yy, xx = np.mgrid[r.y0 : r.y1, r.x0 : r.x1]
        self.identity = np.dstack([xx, yy]).astype(np.float32)
        self._pixel_x = xx.astype(np.float32)
        self._pixel_y = yy.astype(np.float32)
        # Rest triangle of every pixel centre in the region (initial guesses of the walk),
        # as a float32 image (exact integers) so cv2.remap can look many up at once.
        self.rest_raster = self._rest_triangles(xx.ravel(), yy.ravel())
        self._raster_image = self.rest_raster.reshape(r.height, r.width).astype(np.float32)

        # Coarse grid: cell centres of a (gh, gw) image that cv2.resize maps onto the region.
        # The last cells may reach past the region; their centres are clamped inside it (the
        # displacement field is smooth, so its value at the clamped point is what bilinear
        # upsampling needs there).
        self.grid_w, self.grid_h, self.grid_x, self.grid_y, nominal = self._grid(step)
        # The coarse map is upsampled as ABSOLUTE coordinates (no identity to add per frame):
        # its samples are the source points minus the clamped grid positions plus the
        # nominal ones (what the displacement upsampling assumed), and cv2.resize of the
        # nominal grid is the identity except in the half cell by the region's edges.
        shift = nominal - np.column_stack([self.grid_x, self.grid_y])
        self._shift_at = np.flatnonzero(np.abs(shift).max(axis=1) > 0)
        self._shift = shift[self._shift_at].astype(np.float32)
        self._edges = self._edge_fix(nominal)

        # Rest triangle of each grid point: where its walk starts when its row neighbour's
        # triangle does not lead to it (``walk_rows``).
        self._grid_rest = self._rest_triangles(self.grid_x, self.grid_y)
        # Rest-layout barycentric maps, for first-order guesses at arbitrary points.
        self._rest_ft = frame_triangles(rig, rig.rest[:, :2])
        # Compile the walk (or load it from numba's cache) now rather than in the first
        # frame, which would otherwise be 0.3-1.5 s late.
        self._locate_rows(
            rig.rest[:, :2], self._rest_ft, self.grid_x[:1], self.grid_y[:1], self._grid_rest[:1], 1
        )

    def _grid(self, step: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        r = self.region
        gw, gh = -(-r.width // step), -(-r.height // step)
        nx = r.x0 + (np.arange(gw) + 0.5) * step - 0.5
        ny = r.y0 + (np.arange(gh) + 0.5) * step - 0.5
        gyy, gxx = np.meshgrid(np.minimum(ny, r.y1 - 1), np.minimum(nx, r.x1 - 1), indexing="ij")
        nyy, nxx = np.meshgrid(ny, nx, indexing="ij")
        nominal = np.column_stack([nxx.ravel(), nyy.ravel()])
        return gw, gh, gxx.ravel().astype(np.float32), gyy.ravel().astype(np.float32), nominal

    def _edge_fix(self, nominal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where and how the upsampled coarse map is corrected by the region's edge.

        Between the region's edge and the outermost grid centres cv2.resize repeats the
        outermost value; the true motion falls to zero at the edge (the image border or the
        fixed vertices around the moving part), so the displacement is ramped down linearly
        there instead: map = identity + ramp (upsampled - resized nominal grid). Returns the
        flat indices of those map entries and (ramp, identity - ramp * resized nominal) at
        each, so the correction is one gather, a multiply-add and one scatter.
        """
        r, step = self.region, self.step
        first = step / 2.0 - 0.5
        weight = np.ones((r.height, r.width), np.float32)
        for k in range(int(np.ceil(first))):
            value = (k + 0.5) / (first + 0.5)
            weight[k] *= value
            weight[-1 - k] *= value
            weight[:, k] *= value
            weight[:, -1 - k] *= value
        grid = nominal.reshape(self.grid_h, self.grid_w, 2).astype(np.float32)
        size = (self.grid_w * step, self.grid_h * step)
        resized = np.asarray(cv2.resize(grid, size, interpolation=cv2.INTER_LINEAR))
        resized = resized[: r.height, : r.width].reshape(-1)
        ramp = np.repeat(weight.reshape(-1), 2)
        at = np.flatnonzero(ramp < 1.0)
        offset = self.identity.reshape(-1)[at] - ramp[at] * resized[at]
        return at, ramp[at], offset.astype(np.float32)

    @cached_property
    def _rest_delaunay(self) -> Delaunay:
        # The rig's triangulation IS the Delaunay triangulation of exactly these float32
        # rest points, so scipy's point location on a fresh Delaunay object agrees with it
        # (same simplices in the same order; the rig only reorders corners within a row).
        tri = Delaunay(self.rig.rest[:, :2].astype(np.float64))
        if not np.array_equal(np.sort(tri.simplices, axis=1), np.sort(self.rig.triangles, axis=1)):
            raise RuntimeError("rest triangulation is not reproducible")
        return tri

    def _rest_triangles(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        found = self._rest_delaunay.find_simplex(np.column_stack([x, y]).astype(np.float64))
        return np.where(found < 0, 0, found).astype(np.int32)

    def rest_motion(self, q: np.ndarray, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(n, 2) float64 vertex motion ``q - rest`` interpolated on the REST mesh at points
        (x, y) lying in rest triangles ``t``: the first-order displacement d(x)."""
        _, _, l1, l2 = _barycentric(self._rest_ft.bary[t].astype(np.float64), x, y)
        corners = self.rig.triangles[t]
        d = q - self.rig.rest[:, :2]
        moved: np.ndarray = (1.0 - l1 - l2)[:, None] * d[corners[:, 0]]
        moved += l1[:, None] * d[corners[:, 1]] + l2[:, None] * d[corners[:, 2]]
        return moved

    def rest_triangle_at(self, points: np.ndarray) -> np.ndarray:
        """Rest triangle (int32, flat) at each point of an (h, w, 2) float32 image of
        absolute coordinates (nearest pixel centre, clamped to the region)."""
        r = self.region
        if r.x0 or r.y0:
            points = points - np.array([r.x0, r.y0], np.float32)
        found = cv2.remap(
            self._raster_image,
            points,
            np.empty(0, np.float32),  # unused with a (h, w, 2) map (the stubs want an array)
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return np.asarray(found, dtype=np.int32).ravel()

    def _first_order(self, q: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Rest triangle at x - d(x), d the vertex motion interpolated on the rest mesh."""
        # cv2.remap takes images under 32767 px a side: lay the points out in rows.
        n = len(x)
        cols = min(n, 1024)
        xy = np.zeros((-(-n // cols), cols, 2), np.float32)
        flat = xy.reshape(-1, 2)
        flat[:n, 0], flat[:n, 1] = x, y
        t = self.rest_triangle_at(xy)[:n]
        flat[:n] -= self.rest_motion(q, x, y, t).astype(np.float32)
        return self.rest_triangle_at(xy)[:n]

    def _locate_rows(
        self,
        q: np.ndarray,
        ft: FrameTriangles,
        x: np.ndarray,
        y: np.ndarray,
        starts: np.ndarray,
        width: int,
        max_steps: int = 12,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Source points of (x, y) (rows of ``width``) by ``walk_rows``. The few points it
        cannot place are walked again by ``locate`` from their first-order guess: near
        closed lids the collapsed triangles form a seam the walk may not cross from the
        wrong side (its escape rule can cycle), and a start on the other side of it finds
        the way; ``locate`` clamps what it cannot place either."""
        n = len(x)
        sx = np.empty(n, np.float32)
        sy = np.empty(n, np.float32)
        tri = np.empty(n, np.int32)
        lost = walk_rows(ft.table, self.steps, x, y, starts, width, max_steps, sx, sy, tri)
        if lost:
            idx = np.flatnonzero(tri < 0)
            xl, yl = x[idx], y[idx]
            again = locate(ft, self.steps, xl, yl, self._first_order(q, xl, yl), max_steps)
            sx[idx] = again.sx
            sy[idx] = again.sy
        return sx, sy

    def coarse(self, q: np.ndarray, ft: FrameTriangles) -> np.ndarray:
        """(H, W, 2) map over ``region`` from the exact inverse at the coarse grid points."""
        sx, sy = self._locate_rows(q, ft, self.grid_x, self.grid_y, self._grid_rest, self.grid_w)
        coarse = np.empty((self.grid_h * self.grid_w, 2), np.float32)
        coarse[:, 0] = sx
        coarse[:, 1] = sy
        if self._shift_at.size:
            coarse[self._shift_at] += self._shift
        # Upsampled as absolute coordinates; ramped to the identity at the region's edge.
        r = self.region
        up = np.asarray(
            cv2.resize(
                coarse.reshape(self.grid_h, self.grid_w, 2),
                (self.grid_w * self.step, self.grid_h * self.step),
                interpolation=cv2.INTER_LINEAR,
            ),
            dtype=np.float32,
        )
        if up.shape[0] != r.height or up.shape[1] != r.width:
            up = np.ascontiguousarray(up[: r.height, : r.width])
        at, ramp, offset = self._edges
        values = up.reshape(-1)
        edge = values.take(at)
        edge *= ramp
        edge += offset
        values.put(at, edge)
        return up

    def refine(
        self, maps: np.ndarray, q: np.ndarray, ft: FrameTriangles, boxes: list[Region]
    ) -> None:
        """Exact per-pixel inverse inside ``boxes`` (image coordinates), in place."""
        r = self.region
        rest = self.rest_raster.reshape(r.height, r.width)
        for box in boxes:
            box = box.clipped(r)
            if box.empty:
                continue
            sl = (slice(box.y0 - r.y0, box.y1 - r.y0), slice(box.x0 - r.x0, box.x1 - r.x0))
            x = self._pixel_x[sl].ravel()
            y = self._pixel_y[sl].ravel()
            sx, sy = self._locate_rows(q, ft, x, y, rest[sl].ravel(), box.width, max_steps=8)
            current = maps[sl]
            current[:, :, 0] = sx.reshape(box.height, box.width)
            current[:, :, 1] = sy.reshape(box.height, box.width)

    def exact(self, q: np.ndarray, ft: FrameTriangles) -> np.ndarray:
        """The exact per-pixel map over ``region`` (reference for error measurements)."""
        maps = self.coarse(q, ft)
        self.refine(maps, q, ft, [self.region])
        return maps


def map_error(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per-pixel distance (px) between two (H, W, 2) backward maps."""
    err: np.ndarray = np.hypot(approx[:, :, 0] - exact[:, :, 0], approx[:, :, 1] - exact[:, :, 1])
    return err


def approx_map_error(warp: InverseWarp, q: np.ndarray) -> np.ndarray:
    """Error of the first-order shortcut p = x - d(x) (d interpolated on the rest mesh),
    against the exact map, per pixel of ``warp.region``."""
    exact = warp.exact(q, frame_triangles(warp.rig, q))
    r = warp.region
    x = warp.identity[:, :, 0].ravel().astype(np.float64)
    y = warp.identity[:, :, 1].ravel().astype(np.float64)
    d = warp.rest_motion(q, x, y, warp.rest_raster)
    sx, sy = x - d[:, 0], y - d[:, 1]
    approx = np.dstack([sx.reshape(r.height, r.width), sy.reshape(r.height, r.width)])
    return map_error(approx, exact)
