"""The point-location walk compiled (numba): rows of points, each starting where its
neighbour ended.

``warp.locate`` walks all points in lock-step with numpy, which pays Python-level dispatch
for every step and gathers a whole table row per point per step. Here each point walks on
its own, and starts in the triangle the previous point of its row (or the point above)
ended in: grid points and pixels a few pixels apart are almost always in the same triangle
or the next, so most points take zero or one step. The walk is the same visibility walk
(cross the edge with the most negative barycentric coordinate, < -eps, until inside; the
table's escape rows route points off collapsed triangles), on the same ``FrameTriangles``
table and ``walk_table`` successors, so a point gets the same triangle and source as with
``locate`` up to float rounding (float64 here).

A point the walk cannot place from its neighbour's triangle is walked again from its own
``starts`` entry; one that fails again is reported (``tri = -1``) and left to the caller
(``warp.InverseWarp._locate_rows``), which has the slower, more robust fall-backs.

Compiled on first use and cached on disk next to this file (``cache=True``); ``nogil`` so
renders in worker threads run in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EPS = 1e-4  # barycentric tolerance (points on shared edges); ``warp.locate`` uses it too


@njit(cache=True, nogil=True)
def _walk_one(
    table: np.ndarray, steps: np.ndarray, x: float, y: float, t: int, max_steps: int
) -> int:
    """Triangle containing (x, y) by walking from ``t``; -1 when not found."""
    for _ in range(max_steps + 1):
        dx = x - table[t, 4]
        dy = y - table[t, 5]
        l1 = table[t, 0] * dx + table[t, 1] * dy
        l2 = table[t, 2] * dx + table[t, 3] * dy
        l0 = 1.0 - l1 - l2
        k = 3
        low = -EPS
        if l0 < low:
            k, low = 0, l0
        if l1 < low:
            k, low = 1, l1
        if l2 < low:
            k = 2
        if k == 3:
            return t
        nxt = steps[4 * t + k]
        if nxt == t:
            return -1  # outside the hull: nowhere to go
        t = nxt
    return -1


@njit(cache=True, nogil=True)
def walk_rows(
    table: np.ndarray,
    steps: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    starts: np.ndarray,
    width: int,
    max_steps: int,
    sx: np.ndarray,
    sy: np.ndarray,
    tri: np.ndarray,
) -> int:
    """Locate the points (``xs``, ``ys``), laid out in rows of ``width``; write their
    source points into ``sx``, ``sy`` and their triangles into ``tri`` (-1: not placed,
    source left untouched). Returns how many were not placed."""
    lost = 0
    for i in range(xs.size):
        x = xs[i]
        y = ys[i]
        prev = -1
        if i % width != 0:
            prev = tri[i - 1]
        elif i >= width:
            prev = tri[i - width]
        t = -1
        if prev >= 0:
            t = _walk_one(table, steps, x, y, prev, max_steps)
        if t < 0:
            t = _walk_one(table, steps, x, y, starts[i], max_steps)
        tri[i] = t
        if t < 0:
            lost += 1
            continue
        dx = x - table[t, 4]
        dy = y - table[t, 5]
        sx[i] = table[t, 6] * dx + table[t, 7] * dy + table[t, 10]
        sy[i] = table[t, 8] * dx + table[t, 9] * dy + table[t, 11]
    return lost
