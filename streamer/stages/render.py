"""MeshRenderStage: MotionFrame -> VideoFrame with the checkpoint-free mesh renderer.

Input per frame: ``pose.pitch/yaw/roll`` (degrees, offsets from the photo's pose; "still" is
handled upstream, where the pose is already zero), ``mouth_open`` in [0, 1], ``blink`` in
[0, 1], ``mouth_wide`` in [-1, 1] and ``gaze`` (right, down) in [-1, 1]. Output:
``VideoFrame.image``, RGB uint8, (S, S, 3) in "crop" mode or the photo's size (long side
<= 1920, even sides) in "full" mode.

Delay: 0 frames. Stateless between frames (a frame depends only on its own motion), so
``reset`` has nothing to drop and the renderer can be shared by several sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from msadtalker.avatar import PreparedAvatar, prepare_avatar
from msadtalker.mesh.controls import FaceControls
from msadtalker.mesh.renderer import MeshRenderer
from streamer.types import MotionFrame, VideoFrame

Mode = Literal["crop", "full"]


def controls_of(motion: MotionFrame) -> FaceControls:
    """The renderer controls a motion frame asks for."""
    pose = motion.pose
    return FaceControls(
        pitch=pose.pitch,
        yaw=pose.yaw,
        roll=pose.roll,
        mouth_open=motion.mouth_open,
        mouth_wide=motion.mouth_wide,
        blink=motion.blink,
        gaze_x=motion.gaze[0],
        gaze_y=motion.gaze[1],
    )


class MeshRenderStage:
    """See the module docstring. ``renderer`` may be shared between stages (sessions)."""

    def __init__(self, renderer: MeshRenderer, mode: Mode = "crop") -> None:
        if mode not in ("crop", "full"):
            raise ValueError(f"render mode must be 'crop' or 'full', got {mode!r}")
        self._renderer = renderer
        self._mode = mode

    @classmethod
    def from_avatar(
        cls,
        avatar: PreparedAvatar | str | Path,
        size: int = 256,
        mode: Mode = "crop",
        face_index: int | None = None,
    ) -> MeshRenderStage:
        """Prepare (or reuse the cached preparation of) a photo and build the stage."""
        prepared = (
            avatar
            if isinstance(avatar, PreparedAvatar)
            else prepare_avatar(avatar, size, face_index)
        )
        return cls(MeshRenderer(prepared, size), mode)

    @property
    def renderer(self) -> MeshRenderer:
        return self._renderer

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

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        controls = controls_of(item)
        if self._mode == "full":
            image = self._renderer.render_full_controls(controls)
        else:
            image = self._renderer.render_controls(controls)
        image = np.ascontiguousarray(image)
        image.setflags(write=False)
        return [VideoFrame(motion=item, image=image)]

    def flush(self) -> list[VideoFrame]:
        return []

    def reset(self) -> None:
        """Nothing is buffered: every frame is rendered from its own motion."""
