"""NeuralLipStage: FeatureFrame -> LipFrame from SadTalker's ExpNet and MappingNet.

Per frame: ExpNet on the frame's (80, 16) mel window (reference = the source's expression,
blink ratio 0; the blink is added after the silence damping, see
``msadtalker.neural.motion``) -> the expression delta; the frame's lip row (source pose held)
joins a window buffer; the mapping network on the 27-frame lip window of frame i gives the
lip keypoints -> ``upper_lip`` / ``lower_lip`` (keypoint units along each lip's opening
direction), ``mouth_open`` in [0, 1], ``expression`` = the (64,) delta (zero = the photo's
own expression). ``mouth_wide`` is 0 (no neural estimate).

Delay: ``lookahead`` frames, at most 13 (the mapping's semantic radius). Frame i is emitted
when frame i + lookahead has arrived; its window reads frames up to the newest one that has,
later frames clamped to it, exactly as the official code treats the end of a clip. With 13
the windows are the official ones. ``flush`` emits the rest with the clip-end rule.

``reset`` (barge-in): frames not yet emitted keep their audio but get the rest expression
(delta 0) and rest lip rows, so the mouth goes still at once; the stream position keeps
counting. ``nominal_range``: the lower lip's speech range from the per-checkpoint lip
calibration (the silence weighter's range floor).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from msadtalker.neural.coeffs import RADIUS, WindowBuffer
from msadtalker.neural.motion import NeuralMotion
from streamer.types import FeatureFrame, LipFrame


class NeuralLipStage:
    def __init__(self, motion: NeuralMotion, lookahead: int = 0) -> None:
        if lookahead < 0:
            raise ValueError("lookahead must be >= 0 frames")
        self._motion = motion
        self._lookahead = min(lookahead, RADIUS)
        self._rows = WindowBuffer()
        self._pending: deque[tuple[FeatureFrame, np.ndarray]] = deque()
        self._index_offset = 0  # stream index of buffer frame 0

    @property
    def delay_frames(self) -> int:
        return self._lookahead

    @property
    def nominal_range(self) -> float:
        return self._motion.nominal_range

    def push(self, item: FeatureFrame) -> list[LipFrame]:
        if self._rows.newest < 0:
            self._index_offset = item.index
        expected = self._index_offset + self._rows.newest + 1
        if item.index != expected:
            raise ValueError(
                f"NeuralLipStage expected frame {expected}, got {item.index}: frames must "
                "arrive in order without gaps"
            )
        delta = self._motion.expression(item.mel)
        self._rows.append(self._motion.lip_row(delta))
        self._pending.append((item, delta))
        out = []
        while (
            self._pending
            and self._local(self._pending[0][0]) + self._lookahead <= self._rows.newest
        ):
            out.append(self._emit())
        return out

    def flush(self) -> list[LipFrame]:
        out = []
        while self._pending:
            out.append(self._emit())
        self._rows.clear()
        self._index_offset = 0
        return out

    def reset(self) -> None:
        rest = np.zeros(64, dtype=np.float32)
        rest_row = self._motion.lip_row(rest)
        self._pending = deque((features, rest) for features, _ in self._pending)
        for features, _ in self._pending:
            self._rows.replace(self._local(features), rest_row)

    def _local(self, features: FeatureFrame) -> int:
        return features.index - self._index_offset

    def _emit(self) -> LipFrame:
        features, delta = self._pending.popleft()
        local = self._local(features)
        signal = self._motion.lip_signal(self._rows.window(local))
        self._rows.release_before(local + 1)
        return LipFrame(
            features=features,
            upper_lip=signal.upper,
            lower_lip=signal.lower,
            mouth_open=signal.mouth_open,
            expression=delta,
        )
