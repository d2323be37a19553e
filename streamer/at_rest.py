"""The avatar at rest: head at the photo's own pose, mouth closed, eyes open, neutral face.

What a barge-in returns to (``at_rest`` finds such a picture) and what the mouth probe
measures from (``rest_motion``).
"""

from __future__ import annotations

import numpy as np

from msadtalker.timing import SAMPLES_PER_FRAME
from streamer.types import FeatureFrame, HeadPose, LipFrame, MotionFrame, SilenceFrame

REST_POSE = HeadPose(0.0, 0.0, 0.0)
# Tolerances of ``at_rest``: below what a renderer shows.
REST_MOUTH = 0.02
REST_BLINK = 0.05
REST_EXPRESSION = 1e-3


def rest_motion(mouth_open: float = 0.0, index: int = 0) -> MotionFrame:
    """A frame of motion at the rest pose with the given mouth opening (eyes open)."""
    features = FeatureFrame(
        index=index,
        audio=np.zeros(SAMPLES_PER_FRAME, dtype=np.float32),
        mel=np.zeros((80, 16), dtype=np.float32),
    )
    lips = LipFrame(features=features, upper_lip=0.0, lower_lip=0.0, mouth_open=mouth_open)
    silence = SilenceFrame(lips=lips, silent=mouth_open == 0.0, weight=1.0)
    return MotionFrame(
        silence=silence, pose=REST_POSE, pose_raw=REST_POSE, mouth_open=mouth_open, blink=0.0
    )


def at_rest(motion: MotionFrame) -> bool:
    """Whether a frame shows the avatar at rest (within what a renderer shows)."""
    pose = motion.pose
    expression = motion.expression
    return (
        pose.pitch == 0.0
        and pose.yaw == 0.0
        and pose.roll == 0.0
        and motion.mouth_open <= REST_MOUTH
        and abs(motion.mouth_wide) <= REST_MOUTH
        and motion.gaze == (0.0, 0.0)
        and motion.blink <= REST_BLINK
        and (expression is None or float(np.abs(expression).max(initial=0.0)) <= REST_EXPRESSION)
    )
