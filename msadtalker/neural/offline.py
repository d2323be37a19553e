"""The whole-clip (official-style) form of the neural motion, the reference for streaming.

The official code sees the whole clip: every mapping window of frame i reads frames
``i - 13 ... i + 13`` clamped to ``[0, T - 1]``. These functions compute exactly that from
per-frame inputs, one network call per frame with the same batch shapes as the streaming
stages, so a stream with full lookahead must reproduce them bit for bit.
"""

from __future__ import annotations

import numpy as np

from msadtalker.neural.coeffs import window_indices
from msadtalker.neural.lips import LipSignal
from msadtalker.neural.motion import NeuralMotion


def clip_windows(rows: np.ndarray) -> list[np.ndarray]:
    """(T, C) rows -> the T official (1, C, 27) windows."""
    rows = np.asarray(rows, dtype=np.float32)
    last = len(rows) - 1
    return [rows[window_indices(i, last)].T[None] for i in range(len(rows))]


def offline_expressions(motion: NeuralMotion, mels: np.ndarray) -> np.ndarray:
    """(T, 80, 16) mel windows -> (T, 64) expression deltas."""
    return np.stack([motion.expression(mel) for mel in mels])


def offline_lip_signals(motion: NeuralMotion, deltas: np.ndarray) -> list[LipSignal]:
    rows = np.stack([motion.lip_row(delta) for delta in deltas])
    return [motion.lip_signal(window) for window in clip_windows(rows)]


def offline_driving_keypoints(motion: NeuralMotion, rows: np.ndarray) -> np.ndarray:
    """(T, C) drive rows -> (T, 15, 3) driving keypoints."""
    return np.stack([motion.driving_keypoints(window) for window in clip_windows(rows)])
