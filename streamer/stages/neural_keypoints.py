"""NeuralKeypointStage: MotionFrame -> MotionFrame with ``kp_driving`` (MappingNet window).

Per frame: the drive row ``[source exp + damped expression delta + blink * ExpNet's blink
column | source angles + pose offset (pitch, yaw, roll degrees -> radians) | source trans
(| s, tx, ty)]`` (``NeuralMotion.drive_row``: the cosine pose, weighted by the silence weight,
replaces PoseVAE's) joins a window buffer; frame i's 27-frame window (frames i - 13 ... i + 13)
goes through the mapping network and ``keypoint_transformation`` -> ``kp_driving`` (15, 3).

Delay: ``lookahead`` frames, at most 13; frames that have not arrived are treated as the end
of the clip (indices clamped to the newest frame), so 13 gives the official windows exactly.
``flush`` emits the rest with the clip-end rule. ``reset`` drops nothing: the motion stage
has already brought buffered frames to rest, and frame indices stay contiguous.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from msadtalker.neural.coeffs import RADIUS, WindowBuffer
from msadtalker.neural.motion import NeuralMotion
from streamer.types import MotionFrame


class NeuralKeypointStage:
    def __init__(self, motion: NeuralMotion, lookahead: int = 0) -> None:
        if lookahead < 0:
            raise ValueError("lookahead must be >= 0 frames")
        self._motion = motion
        self._lookahead = min(lookahead, RADIUS)
        self._rows = WindowBuffer()
        self._pending: deque[MotionFrame] = deque()
        self._index_offset = 0

    @property
    def delay_frames(self) -> int:
        return self._lookahead

    def push(self, item: MotionFrame) -> list[MotionFrame]:
        if self._rows.newest < 0:
            self._index_offset = item.index
        expected = self._index_offset + self._rows.newest + 1
        if item.index != expected:
            raise ValueError(
                f"NeuralKeypointStage expected frame {expected}, got {item.index}: frames "
                "must arrive in order without gaps"
            )
        if item.expression is None:
            raise ValueError("NeuralKeypointStage needs the neural lip stage's expression")
        pose = item.pose
        self._rows.append(
            self._motion.drive_row(item.expression, item.blink, (pose.pitch, pose.yaw, pose.roll))
        )
        self._pending.append(item)
        out = []
        while (
            self._pending and self._local(self._pending[0]) + self._lookahead <= self._rows.newest
        ):
            out.append(self._emit())
        return out

    def flush(self) -> list[MotionFrame]:
        out = []
        while self._pending:
            out.append(self._emit())
        self._rows.clear()
        self._index_offset = 0
        return out

    def reset(self) -> None:
        """Nothing to drop (see the module docstring)."""

    def _local(self, frame: MotionFrame) -> int:
        return frame.index - self._index_offset

    def _emit(self) -> MotionFrame:
        frame = self._pending.popleft()
        local = self._local(frame)
        keypoints = self._motion.driving_keypoints(self._rows.window(local))
        keypoints.setflags(write=False)
        self._rows.release_before(local + 1)
        return dataclasses.replace(frame, kp_driving=keypoints)
