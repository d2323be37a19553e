"""MotionStage: SilenceFrame -> MotionFrame. Cosine pose, silence blend (eq. 6), blinks, mouth.

Per frame: P_raw from the cosine generator (eqs 1-3); the rendered pose is
``omega * P_raw + (1 - omega) * P_initial`` with omega = the eased silence weight (eq. 6;
P_initial = the photo's own pose, i.e. zero offsets). The mouth opening is blended the same
way toward a slowly tracking hold of itself: a still mouth in silence stays still, and a
sustained vowel that the lip-derivative detector calls "silent" keeps its opening instead of
snapping shut. ``still`` keeps the head at P_initial (mouth and blinks only).

Delay: 0 frames.
"""

from __future__ import annotations

import math

import numpy as np

from msadtalker.blink import BlinkConfig, BlinkSchedule
from msadtalker.pose import CosinePoseConfig, CosinePoseGenerator
from msadtalker.silence import SilenceConfig, ease_weight
from msadtalker.timing import FPS
from streamer.types import HeadPose, MotionFrame, SilenceFrame

_REST = HeadPose(0.0, 0.0, 0.0)


class MotionStage:
    def __init__(
        self,
        pose: CosinePoseConfig | None = None,
        silence: SilenceConfig | None = None,
        blink: BlinkConfig | None = None,
        seed: int = 0,
        still: bool = False,
    ) -> None:
        self._silence = silence or SilenceConfig()
        self._pose = CosinePoseGenerator(pose, seed=seed)
        self._blinks = BlinkSchedule(blink, seed=seed)
        self._still = still
        self._hold_alpha = 1.0 - math.exp(-1.0 / max(self._silence.mouth_hold_s * FPS, 1e-6))
        self._mouth_hold = 0.0
        self._expression_hold: np.ndarray | None = None
        self._closed_by_reset = False

    @property
    def delay_frames(self) -> int:
        return 0

    def push(self, item: SilenceFrame) -> list[MotionFrame]:
        if item.index != self._pose.frame:
            raise ValueError(
                f"MotionStage expected frame {self._pose.frame}, got {item.index}: "
                "frames must arrive in order without gaps"
            )
        raw = self._pose.step()
        pose_raw = HeadPose(float(raw[0]), float(raw[1]), float(raw[2]))
        omega = ease_weight(item.weight, self._silence.pose_easing)
        if self._still:
            pose = _REST
        else:
            pose = HeadPose(omega * pose_raw.pitch, omega * pose_raw.yaw, omega * pose_raw.roll)

        mouth = item.lips.mouth_open
        # The first frame after a barge-in shows the closed mouth (neutral expression) that
        # reset() promised: the holds start from rest, not from this frame.
        resting, self._closed_by_reset = self._closed_by_reset, False
        if not resting:
            self._mouth_hold += self._hold_alpha * (mouth - self._mouth_hold)
        w = min(max(item.weight, 0.0), 1.0)
        mouth_out = w * mouth + (1.0 - w) * self._mouth_hold
        expression = self._damp_expression(item.lips.expression, w, resting)
        return [
            MotionFrame(
                silence=item,
                pose=pose,
                pose_raw=pose_raw,
                mouth_open=min(max(mouth_out, 0.0), 1.0),
                blink=self._blinks.step(),
                expression=expression,
            )
        ]

    def _damp_expression(
        self, expression: np.ndarray | None, w: float, resting: bool = False
    ) -> np.ndarray | None:
        if expression is None:
            return None
        if resting:
            self._expression_hold = np.zeros_like(expression, dtype=np.float32)
        elif self._expression_hold is None:
            self._expression_hold = expression.astype(np.float32, copy=True)
        else:
            self._expression_hold += self._hold_alpha * (expression - self._expression_hold)
        damped = w * expression + (1.0 - w) * self._expression_hold
        return damped.astype(np.float32)

    def flush(self) -> list[MotionFrame]:
        return []

    def reset(self) -> None:
        # Barge-in: the mouth closes now; the pose and blink clocks keep running.
        self._mouth_hold = 0.0
        self._expression_hold = None
        self._closed_by_reset = True
