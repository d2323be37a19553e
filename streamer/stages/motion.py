"""MotionStage: SilenceFrame -> MotionFrame. Cosine pose, silence blend (eq. 6), blinks, mouth.

Per frame: P_raw from the cosine generator (eqs 1-3); the rendered pose is
``omega * P_raw + (1 - omega) * P_initial`` (eq. 6; P_initial = the photo's own pose, i.e.
zero offsets) with omega = ``PoseBlend`` of the silence weight w~ (the paper's w~ itself when
``silence.pose_easing = "linear"`` and ``silence.pose_ease_s = 0``; by default low-passed and
smoothstep-eased so the head eases to rest). The mouth opening, and on the neural path the
expression coefficients, go through a ``MotionDamper``: unchanged while w~ = 1, smoothed ever
more strongly as w~ falls, so residual lip motion in silence is damped while a steady opening
is kept and a mouth the lip source closed stays closed. The lips' shape (``mouth_wide``:
spread / rounded) is damped by the same rule, except that a return toward neutral passes
unchanged, so a silent mouth is neutral as well as shut, and settles at once.
``still`` keeps the head at P_initial (mouth and blinks only). See ``msadtalker.settle``.

Optional idle life (``msadtalker.idle``, off by default): slow gaze shifts (``gaze``) and
head micro-motion of a few tenths of a degree added to the pose after the silence blend
(not with ``still``).

Delay: 0 frames.
"""

from __future__ import annotations

import numpy as np

from msadtalker.blink import BlinkConfig, BlinkSchedule
from msadtalker.idle import IdleConfig, IdleMotion
from msadtalker.pose import CosinePoseConfig, CosinePoseGenerator
from msadtalker.settle import MotionDamper, PoseBlend
from msadtalker.silence import SilenceConfig
from streamer.types import HeadPose, MotionFrame, SilenceFrame

_REST = HeadPose(0.0, 0.0, 0.0)


class MotionStage:
    """SilenceFrame -> one MotionFrame (pose, damped mouth/expression, blink). Delay: 0."""

    def __init__(
        self,
        pose: CosinePoseConfig | None = None,
        silence: SilenceConfig | None = None,
        blink: BlinkConfig | None = None,
        seed: int = 0,
        still: bool = False,
        idle: IdleConfig | None = None,
    ) -> None:
        self._silence = silence or SilenceConfig()
        self._pose = CosinePoseGenerator(pose, seed=seed)
        self._blinks = BlinkSchedule(blink, seed=seed)
        self._still = still
        self._blend = PoseBlend(self._silence.pose_easing, self._silence.pose_ease_s)
        # 2 % of full opening is invisible (the articulator's own dead zone): once that close
        # to the source, the mouth is the source's, so a shut mouth settles exactly.
        self._mouth = MotionDamper(self._silence.mouth_damping_s, settle=0.02)
        self._shape = MotionDamper(self._silence.mouth_damping_s, settle=0.02)
        self._idle = IdleMotion(idle, seed=seed)
        self._expression = MotionDamper(self._silence.mouth_damping_s)
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
        omega = self._blend.step(item.weight)
        gaze, micro = self._idle.step()
        if self._still:
            pose = _REST
        else:
            # "+ 0.0" turns the -0.0 of a negative offset times omega = 0 into 0.0.
            pose = HeadPose(
                omega * pose_raw.pitch + micro[0] + 0.0,
                omega * pose_raw.yaw + micro[1] + 0.0,
                omega * pose_raw.roll + micro[2] + 0.0,
            )

        # The first frame after a barge-in shows the closed mouth and neutral expression that
        # reset() promised; the dampers continue from that rest.
        resting, self._closed_by_reset = self._closed_by_reset, False
        expression = item.lips.expression
        if resting:
            mouth = self._mouth.hold_rest(0.0)
            shape = self._shape.hold_rest(0.0)
            if expression is not None:
                expression = self._expression.hold_rest(np.zeros_like(expression))
        else:
            mouth = self._mouth.step(item.lips.mouth_open, item.weight)
            shape = self._relaxed_shape(item.lips.mouth_wide, item.weight)
            if expression is not None:
                expression = self._expression.step(expression, item.weight)
        return [
            MotionFrame(
                silence=item,
                pose=pose,
                pose_raw=pose_raw,
                mouth_open=min(max(mouth, 0.0), 1.0),
                blink=self._blinks.step(),
                expression=None if expression is None else expression.astype(np.float32),
                mouth_wide=min(max(shape, -1.0), 1.0),
                gaze=gaze,
            )
        ]

    def _relaxed_shape(self, wide: float, weight: float) -> float:
        """The lips' shape damped like the opening, except that a return toward neutral
        passes at once: silence suppresses spurious shaping, never the lips relaxing (a
        rounding held on by the damper after the voice stopped would drift for a second)."""
        shape = self._shape.step(wide, weight)
        if wide * shape >= 0.0 and abs(wide) < abs(shape):
            shape = self._shape.hold_rest(wide)
        return shape

    def flush(self) -> list[MotionFrame]:
        return []

    def reset(self) -> None:
        # Barge-in: the next frame is at rest (head at P_initial, mouth closed, neutral
        # expression); the pose and blink clocks keep running.
        self._blend.reset()
        self._closed_by_reset = True
