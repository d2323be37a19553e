"""NeuralRenderStage: MotionFrame (with ``kp_driving``) -> VideoFrame through the generator.

Input: a ``MotionFrame`` whose ``kp_driving`` (15, 3) the keypoint stage set. Output:
``VideoFrame.image`` RGB uint8, (S, S, 3) in "crop" mode, or the photo's size (long side <=
1920, even sides) in "full" mode, the crop pasted back with a feathered edge
(``msadtalker.neural.render``). One generator call per frame (``generator_render`` on the
per-avatar source encoding).

Delay: 0 frames; stateless between frames, so the renderer is shared by every session and
the live session's drop policy may skip frames here (``RenderGate``).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from msadtalker.neural.render import NeuralRenderer
from streamer.types import MotionFrame, VideoFrame

Mode = Literal["crop", "full"]


class NeuralRenderStage:
    def __init__(self, renderer: NeuralRenderer, mode: Mode = "crop") -> None:
        if mode not in ("crop", "full"):
            raise ValueError(f"render mode must be 'crop' or 'full', got {mode!r}")
        self._renderer = renderer
        self._mode = mode

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames this stage emits."""
        if self._mode == "full":
            return self._renderer.full_size
        return self._renderer.size, self._renderer.size

    @property
    def delay_frames(self) -> int:
        return 0

    def idle_picture(self) -> np.ndarray:
        """The photo (its crop, or all of it in "full" mode): what a live session shows until
        its first picture is rendered (``streamer.live_render``)."""
        avatar = self._renderer.avatar
        if self._mode == "full":
            return avatar.original
        size = self._renderer.size
        if avatar.image.shape[:2] == (size, size):
            return avatar.image
        return np.asarray(cv2.resize(avatar.image, (size, size), interpolation=cv2.INTER_AREA))

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        if item.kp_driving is None:
            raise ValueError(
                f"frame {item.index} has no driving keypoints: NeuralKeypointStage must run "
                "before NeuralRenderStage"
            )
        if self._mode == "full":
            image = self._renderer.render_full(item.kp_driving)
        else:
            image = self._renderer.render(item.kp_driving)
        image.setflags(write=False)
        return [VideoFrame(motion=item, image=image)]

    def flush(self) -> list[VideoFrame]:
        return []

    def reset(self) -> None:
        """Nothing is buffered: every frame is rendered from its own keypoints."""
