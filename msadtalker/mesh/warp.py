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
   each grid point's deformed triangle by a vectorised "visibility walk": start from the rest
   triangle at the first-order guess x - d(x), step across the edge with the most negative
   barycentric coordinate until inside (1-2 steps typically); then apply the barycentrics
   to the triangle's rest corners. This is the EXACT inverse at the grid points;
3. upsample the coarse DISPLACEMENT (source - destination, smooth) bilinearly to full
   resolution (one ``cv2.resize``), ramp it to zero over the half cell at the region's
   edges (where the motion does fall to zero) and add the identity grid;
4. where the warp has kinks at a finer scale than the grid (lips while the mouth opens,
   eyelids while blinking), redo step 2 at every pixel of a small box (the walk starts from
   the triangle the coarse map points to, so it converges in ~1 step).

The coarse grid's only error is the bilinear interpolation of a piecewise-affine map between
grid points, a fraction of a pixel (measured by ``map_error`` against the exact per-pixel map).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from msadtalker.mesh.rig import MeshRig

_EPS = 1e-4  # barycentric tolerance (points on shared edges)


@dataclass(frozen=True)
class FrameTriangles:
    """Per-frame triangle data.

    ``bary``: (T, 6) destination -> barycentric (l1, l2) affine as (a11, a12, a21, a22, ox,
    oy) with l = A (x - o). ``source``: (T, 6) rest corner a and edges b - a, c - a, so that
    the source point is a + l1 (b - a) + l2 (c - a). ``escape``: (T,) int8, for triangles
    collapsed to (nearly) zero area in this frame (closed lids, closed lips), the corner
    opposite their longest edge, which the walk crosses instead of trusting their
    ill-conditioned barycentrics; -1 for healthy triangles.
    """

    bary: np.ndarray
    source: np.ndarray
    escape: np.ndarray


def frame_triangles(rig: MeshRig, q: np.ndarray) -> FrameTriangles:
    """Per-triangle data for deformed vertex positions ``q`` (V, 2)."""
    tri = rig.triangles
    qa, qb, qc = q[tri[:, 0]], q[tri[:, 1]], q[tri[:, 2]]
    e1, e2 = qb - qa, qc - qa
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    collapsed = det <= _COLLAPSED * rig.rest_det
    safe = np.where(collapsed, 1.0, det)
    bary = np.stack(
        [e2[:, 1] / safe, -e2[:, 0] / safe, -e1[:, 1] / safe, e1[:, 0] / safe, qa[:, 0], qa[:, 1]],
        axis=1,
    ).astype(np.float32)
    escape = np.full(len(tri), -1, np.int8)
    if collapsed.any():
        sides = np.stack(
            [
                np.hypot(*(qc - qb)[collapsed].T),  # opposite corner 0
                np.hypot(*(qc - qa)[collapsed].T),  # opposite corner 1
                np.hypot(*(qb - qa)[collapsed].T),  # opposite corner 2
            ],
            axis=1,
        )
        escape[collapsed] = np.argmax(sides, axis=1)
    return FrameTriangles(bary, rig.rest_edges, escape)


_COLLAPSED = 1e-3  # deformed/rest area ratio below which a triangle counts as collapsed


def locate(
    ft: FrameTriangles,
    neighbours: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    start: np.ndarray,
    max_steps: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deformed triangle containing each point (x, y) (float32), walking from ``start``
    (int32), and the point's barycentric (l1, l2) in it (float32)."""
    t = start.astype(np.int32, copy=True)
    l1_all = np.empty(len(t), np.float32)
    l2_all = np.empty(len(t), np.float32)
    active: np.ndarray | None = None  # None: all points (first pass, no index copies)
    for _ in range(max_steps):
        if active is None:
            ta, xa, ya = t, x, y
        else:
            ta, xa, ya = t[active], x[active], y[active]
        c = np.take(ft.bary, ta, axis=0)  # row gather; much faster than fancy indexing
        dx = xa - c[:, 4]
        dy = ya - c[:, 5]
        l1 = c[:, 0] * dx
        l1 += c[:, 1] * dy
        l2 = c[:, 2] * dx
        l2 += c[:, 3] * dy
        l0 = 1.0 - l1 - l2
        if active is None:
            l1_all[:], l2_all[:] = l1, l2
        else:
            l1_all[active], l2_all[active] = l1, l2
        esc = np.take(ft.escape, ta)
        out = (np.minimum(np.minimum(l0, l1), l2) < -_EPS) | (esc >= 0)
        out_idx = np.flatnonzero(out)
        if out_idx.size == 0:
            break
        # Edge to cross: opposite the corner with the most negative coordinate, or the
        # collapsed triangle's escape edge.
        o0, o1, o2 = l0[out_idx], l1[out_idx], l2[out_idx]
        k = np.where(o0 < o1, np.where(o0 < o2, 0, 2), np.where(o1 < o2, 1, 2))
        e = esc[out_idx]
        k = np.where(e >= 0, e, k)
        moved = out_idx if active is None else active[out_idx]
        nb = neighbours[t[moved], k]
        movable = nb >= 0
        active = moved[movable]
        t[active] = nb[movable]
        if active.size == 0:
            break
    return t, l1_all, l2_all


def source_points(
    ft: FrameTriangles, t: np.ndarray, l1: np.ndarray, l2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates from located triangles and barycentrics.

    Barycentrics are clamped to the triangle, so a point the walk could not place exactly
    (mesh folds beyond the supported amplitudes) still maps into its source triangle: the
    map stays bounded, never a stray far-away pixel.
    """
    np.clip(l1, 0.0, 1.0, out=l1)
    np.clip(l2, 0.0, 1.0, out=l2)
    total = l1 + l2
    over = np.flatnonzero(total > 1.0)
    if over.size:
        l1[over] /= total[over]
        l2[over] /= total[over]
    m = np.take(ft.source, t, axis=0)
    sx = m[:, 0] + l1 * m[:, 2]
    sx += l2 * m[:, 4]
    sy = m[:, 1] + l1 * m[:, 3]
    sy += l2 * m[:, 5]
    return sx, sy


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
        from scipy.sparse import csr_matrix

        self.rig = rig
        self.step = step
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
        # Rest triangle of every pixel centre in the region (initial guesses of the walk).
        self.rest_raster = self._rest_triangles(xx.ravel(), yy.ravel())

        # Coarse grid: cell centres of a (gh, gw) image that cv2.resize maps onto the region.
        # The last cells may reach past the region; their centres are clamped inside it (the
        # displacement field is smooth, so its value at the clamped point is what bilinear
        # upsampling needs there).
        self.grid_w = -(-r.width // step)
        self.grid_h = -(-r.height // step)
        gx = np.minimum(r.x0 + (np.arange(self.grid_w) + 0.5) * step - 0.5, r.x1 - 1)
        gy = np.minimum(r.y0 + (np.arange(self.grid_h) + 0.5) * step - 0.5, r.y1 - 1)
        gyy, gxx = np.meshgrid(gy, gx, indexing="ij")
        # Pixel offsets before the first grid centre (at step/2 - 0.5) and their ramp factor.
        first = step / 2.0 - 0.5
        self._edge_ramp = [(k + 0.5) / (first + 0.5) for k in range(int(np.ceil(first)))]
        self.grid_x = gxx.ravel().astype(np.float32)
        self.grid_y = gyy.ravel().astype(np.float32)
        grid_tri = self._rest_triangles(self.grid_x, self.grid_y)
        weights = self._rest_barycentric(self.grid_x, self.grid_y, grid_tri)
        n = len(grid_tri)
        # Sparse (grid point x vertex) matrix: rest-layout interpolation of vertex motion,
        # used only for the first-order starting guess of the walk.
        self.grid_interp = csr_matrix(
            (weights.ravel(), rig.triangles[grid_tri].ravel(), np.arange(0, 3 * n + 1, 3)),
            shape=(n, len(rig.rest)),
        )

    def _rest_triangles(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from scipy.spatial import Delaunay

        # The rig's triangulation IS the Delaunay triangulation of exactly these float32
        # rest points, so scipy's point location on a fresh Delaunay object agrees with it
        # (same simplices in the same order; the rig only reorders corners within a row).
        tri = Delaunay(self.rig.rest[:, :2].astype(np.float64))
        if not np.array_equal(np.sort(tri.simplices, axis=1), np.sort(self.rig.triangles, axis=1)):
            raise RuntimeError("rest triangulation is not reproducible")
        found = tri.find_simplex(np.column_stack([x, y]).astype(np.float64))
        return np.where(found < 0, 0, found).astype(np.int32)

    def _rest_barycentric(self, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        rest = self.rig.rest[:, :2].astype(np.float64)
        ft = frame_triangles(self.rig, rest)
        c = ft.bary[t].astype(np.float64)
        l1 = c[:, 0] * (x - c[:, 4]) + c[:, 1] * (y - c[:, 5])
        l2 = c[:, 2] * (x - c[:, 4]) + c[:, 3] * (y - c[:, 5])
        return np.stack([1.0 - l1 - l2, l1, l2], axis=1)

    def rest_triangle_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = self.region
        xi = np.clip(x - (r.x0 - 0.5), 0, r.width - 1).astype(np.int32)
        yi = np.clip(y - (r.y0 - 0.5), 0, r.height - 1).astype(np.int32)
        return np.take(self.rest_raster, yi * r.width + xi)

    def coarse(self, q: np.ndarray, ft: FrameTriangles) -> np.ndarray:
        """(H, W, 2) map over ``region`` from the exact inverse at the coarse grid points."""
        rig = self.rig
        guess_d = self.grid_interp @ (q - rig.rest[:, :2])
        guess = self.rest_triangle_at(self.grid_x - guess_d[:, 0], self.grid_y - guess_d[:, 1])
        t, l1, l2 = locate(ft, rig.neighbours, self.grid_x, self.grid_y, guess)
        sx, sy = source_points(ft, t, l1, l2)
        disp = np.empty((self.grid_h, self.grid_w, 2), np.float32)
        disp[:, :, 0] = (sx - self.grid_x).reshape(self.grid_h, self.grid_w)
        disp[:, :, 1] = (sy - self.grid_y).reshape(self.grid_h, self.grid_w)
        r = self.region
        up = np.asarray(
            cv2.resize(
                disp,
                (self.grid_w * self.step, self.grid_h * self.step),
                interpolation=cv2.INTER_LINEAR,
            ),
            dtype=np.float32,
        )
        if up.shape[0] != r.height or up.shape[1] != r.width:
            up = up[: r.height, : r.width]
        # Between the region's edge and the outermost grid centres cv2.resize repeats the
        # outermost value; the true motion falls to zero at the edge (the image border or
        # the fixed vertices around the moving part), so ramp it down linearly instead.
        for k, ramp in enumerate(self._edge_ramp):
            up[k] *= ramp
            up[-1 - k] *= ramp
            up[:, k] *= ramp
            up[:, -1 - k] *= ramp
        up += self.identity
        return up

    def refine(self, maps: np.ndarray, ft: FrameTriangles, box: Region) -> None:
        """Exact per-pixel inverse inside ``box`` (image coordinates), in place."""
        r = self.region
        box = box.clipped(r)
        if box.empty:
            return
        sl = (slice(box.y0 - r.y0, box.y1 - r.y0), slice(box.x0 - r.x0, box.x1 - r.x0))
        ident = self.identity[sl]
        x = ident[:, :, 0].ravel()
        y = ident[:, :, 1].ravel()
        current = maps[sl]
        guess = self.rest_triangle_at(current[:, :, 0].ravel(), current[:, :, 1].ravel())
        t, l1, l2 = locate(ft, self.rig.neighbours, x, y, guess, max_steps=8)
        sx, sy = source_points(ft, t, l1, l2)
        current[:, :, 0] = sx.reshape(box.height, box.width)
        current[:, :, 1] = sy.reshape(box.height, box.width)

    def exact(self, q: np.ndarray, ft: FrameTriangles) -> np.ndarray:
        """The exact per-pixel map over ``region`` (reference for error measurements)."""
        maps = self.coarse(q, ft)
        self.refine(maps, ft, self.region)
        return maps


def map_error(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per-pixel distance (px) between two (H, W, 2) backward maps."""
    err: np.ndarray = np.hypot(approx[:, :, 0] - exact[:, :, 0], approx[:, :, 1] - exact[:, :, 1])
    return err


def approx_map_error(warp: InverseWarp, q: np.ndarray) -> np.ndarray:
    """Error of the first-order shortcut p = x - d(x) (d interpolated on the rest mesh),
    against the exact map, per pixel of ``warp.region``."""
    rig = warp.rig
    exact = warp.exact(q, frame_triangles(rig, q))
    r = warp.region
    x = warp.identity[:, :, 0].ravel().astype(np.float64)
    y = warp.identity[:, :, 1].ravel().astype(np.float64)
    rest = rig.rest[:, :2].astype(np.float64)
    ft_rest = frame_triangles(rig, rest)
    t = warp.rest_raster
    c = ft_rest.bary[t].astype(np.float64)
    l1 = c[:, 0] * (x - c[:, 4]) + c[:, 1] * (y - c[:, 5])
    l2 = c[:, 2] * (x - c[:, 4]) + c[:, 3] * (y - c[:, 5])
    corners = rig.triangles[t]
    d = q - rest
    lam = np.stack([1.0 - l1 - l2, l1, l2], axis=1)
    sx = x - (d[corners, 0] * lam).sum(axis=1)
    sy = y - (d[corners, 1] * lam).sum(axis=1)
    approx = np.dstack([sx.reshape(r.height, r.width), sy.reshape(r.height, r.width)])
    return map_error(approx, exact)
