"""SadTalker's per-frame coefficient rows and the mapping network's 27-frame windows.

A row is ``[exp 64 | angles 3 (pitch, yaw, roll, radians) | trans 3]`` (70, crop mode,
``mapping``) or the same plus the source's alignment ``(s, tx, ty)`` (73, full mode,
``mapping_full``). The mapping input of frame i is the rows of frames ``i - 13 ... i + 13``
with every index clamped to ``[0, last]``, transposed to (C, 27). Offline ``last = T - 1``
(the official code); a stream that has seen frames up to n uses ``last = min(n, T - 1)``, i.e.
frames that have not arrived are treated exactly as the official code treats the end of a
clip. :class:`WindowBuffer` keeps the rows a stream still needs (at most the radius behind the
oldest frame not yet emitted, so memory is bounded by the lookahead).

Official: OpenTalker/SadTalker ``src/utils/preprocess.py`` (the coefficient row),
``src/generate_facerender_batch.py`` (the windows, ``transform_semantic_target``).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from msadtalker.models.mapping import WINDOW

EXP = slice(0, 64)
ANGLES = slice(64, 67)
TRANS = slice(67, 70)
CROP_PARAMS = slice(70, 73)
RADIUS = WINDOW // 2  # 13: the official semantic radius


def window_indices(index: int, last: int) -> np.ndarray:
    """Frames read by the window of frame ``index`` when frames up to ``last`` exist."""
    return np.clip(np.arange(index - RADIUS, index + RADIUS + 1), 0, max(last, 0))


def source_window(row: np.ndarray) -> np.ndarray:
    """The source semantics: the source row repeated over the window, (1, C, 27)."""
    return np.repeat(np.asarray(row, dtype=np.float32)[None, :, None], WINDOW, axis=2)


def row_with(
    source: np.ndarray,
    coeff_nc: int,
    exp: np.ndarray,
    pose_offset_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """One frame's row: ``exp`` (64), the source's angles + ``pose_offset_deg`` (pitch, yaw,
    roll degrees) in radians, the source's translation (and alignment params for 73)."""
    row = np.array(source[:coeff_nc], dtype=np.float64)
    row[EXP] = exp
    row[ANGLES] += np.asarray(pose_offset_deg, dtype=np.float64) * (math.pi / 180.0)
    return row.astype(np.float32)


class WindowBuffer:
    """Rows of consecutive frames 0, 1, 2, ... and their clamped windows (see module doc)."""

    def __init__(self) -> None:
        self._rows: deque[np.ndarray] = deque()
        self._first = 0  # frame index of _rows[0]
        self._count = 0  # frames appended

    @property
    def newest(self) -> int:
        """Index of the newest frame (-1 when empty)."""
        return self._count - 1

    def append(self, row: np.ndarray) -> int:
        self._rows.append(np.asarray(row, dtype=np.float32))
        self._count += 1
        return self._count - 1

    def replace(self, index: int, row: np.ndarray) -> None:
        self._rows[index - self._first] = np.asarray(row, dtype=np.float32)

    def window(self, index: int, last: int | None = None) -> np.ndarray:
        """(1, C, 27) mapping input of frame ``index``; ``last`` defaults to the newest frame."""
        last = self.newest if last is None else min(last, self.newest)
        idx = window_indices(index, last)
        if idx[0] < self._first:
            raise IndexError(f"frame {idx[0]} was already dropped (oldest kept {self._first})")
        rows = np.stack([self._rows[i - self._first] for i in idx], axis=1)
        return rows[None]

    def release_before(self, index: int) -> None:
        """Forget rows no window of a frame >= ``index`` reads."""
        keep_from = max(0, index - RADIUS)
        while self._rows and self._first < keep_from:
            self._rows.popleft()
            self._first += 1

    def clear(self) -> None:
        self._rows.clear()
        self._first = 0
        self._count = 0
