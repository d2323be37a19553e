"""MeshRenderer: the default, checkpoint-free renderer. A photo warped by a landmark mesh.

Input per frame: ``FaceControls`` (head pitch/yaw/roll in degrees as offsets from the photo's
pose, mouth_open, mouth_wide, blink; sign conventions in ``controls``). Output: an RGB uint8
frame, (S, S, 3) for the crop (``render``) or the photo's size for "full" mode
(``render_full``; the same warp built directly on the photo, so nothing is pasted and there
is no seam; only the region around the head is re-sampled).

Per frame: vertex positions from the rig (``rig``), the backward map by the coarse-grid exact
inverse plus per-pixel refinement at the lips/lids (``warp``), ONE ``cv2.remap`` of the
region that can move, then the painted mouth interior (``mouth``). Controls at rest return
the source image unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from msadtalker.avatar import topology as tp
from msadtalker.avatar.prepare import PreparedAvatar
from msadtalker.mesh.controls import FaceControls, rotation_matrix
from msadtalker.mesh.expression import OPEN_FRAC, ROUND_GAP_FRAC
from msadtalker.mesh.eyes import lash_colour, shade_slits, shift_gaze
from msadtalker.mesh.mouth import MouthStyle, draw_mouth, mouth_style
from msadtalker.mesh.rig import Deformed, MeshRig, build_rig
from msadtalker.mesh.warp import InverseWarp, Region, frame_triangles

_INNER_LIP_IDS = np.unique(np.array(tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER))
_EYE_IDS = (
    np.unique(np.array(tp.RIGHT_EYE_UPPER1 + tp.RIGHT_EYE_LOWER0 + tp.RIGHT_EYE_UPPER0)),
    np.unique(np.array(tp.LEFT_EYE_UPPER1 + tp.LEFT_EYE_LOWER0 + tp.LEFT_EYE_UPPER0)),
)


def grid_step(eye_distance: float) -> int:
    """Coarse-grid spacing: ~1/32 of the eye distance (4 px for a 512 crop), 2..8 px."""
    return int(np.clip(round(eye_distance / 32.0), 2, 8))


@dataclass(frozen=True)
class _View:
    """Everything precomputed for rendering one image (the crop or the full photo)."""

    source: np.ndarray
    rig: MeshRig
    warp: InverseWarp
    style: MouthStyle
    lash: np.ndarray

    @classmethod
    def build(cls, image: np.ndarray, landmarks: np.ndarray, upscale: float = 1.0) -> _View:
        """``upscale``: how much ``image`` was enlarged from the photo's own pixels."""
        h, w = image.shape[:2]
        rig = build_rig(landmarks, w, h)
        warp = InverseWarp(rig, grid_step(rig.eye_distance))
        style = mouth_style(image, landmarks, rig.mouth_width, upscale)
        source = np.ascontiguousarray(image)
        source.setflags(write=False)
        return cls(source, rig, warp, style, lash_colour(image, landmarks))

    def vertices(self, c: FaceControls) -> np.ndarray:
        """(V, 2) deformed vertex positions for ``c`` (landmarks first)."""
        return self.deform(c).q

    def deform(self, c: FaceControls) -> Deformed:
        rotation = rotation_matrix(c.pitch, c.yaw, c.roll)
        return self.rig.deform(rotation, c.mouth_open, c.mouth_wide, c.blink)

    def opening_px(self, c: FaceControls) -> float:
        """How far the controls open the lips beyond the photo's own gap, pixels."""
        rounded = max(-c.mouth_wide, 0.0)
        share = c.mouth_open * OPEN_FRAC * 1.12 + rounded * ROUND_GAP_FRAC
        return share * self.rig.mouth_width

    def maps(self, c: FaceControls, q: np.ndarray, mesh: Deformed | None = None) -> np.ndarray:
        """The backward map the frame is sampled with: (h, w, 2) over ``warp.region``."""
        rig, warp = self.rig, self.warp
        ft = frame_triangles(rig, q, mesh)
        maps = warp.coarse(q, ft)
        # Per-pixel exactness where the warp kinks on a finer scale than the grid: on the
        # inner-lip (and teeth-edge) lines while the jaw drops and on the lid margins while
        # they close. The coarse map smears a kink over about a grid step: hence the padding.
        pad = 2.5 * warp.step
        boxes = []
        if self.opening_px(c) > 1.0:
            boxes.append(_box(np.concatenate([q[_INNER_LIP_IDS], q[rig.teeth_ids]]), pad))
        if c.blink > 0.0:
            boxes += [_box(q[ids], pad) for ids in _EYE_IDS]
        if boxes:
            warp.refine(maps, q, ft, boxes)
        r = warp.region
        shift_gaze(maps, (r.x0, r.y0), q, (c.gaze_x, c.gaze_y))
        return maps

    def render(self, c: FaceControls) -> np.ndarray:
        if c.is_rest:
            return self.source.copy()
        mesh = self.deform(c)
        q = mesh.q
        maps = self.maps(c, q, mesh)
        r = self.warp.region
        # One interleaved (x, y) float map: cv2's fastest remap path for float maps.
        warped = cv2.remap(  # type: ignore[call-overload]
            self.source, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        if (r.width, r.height) == (self.rig.width, self.rig.height):
            out: np.ndarray = warped  # crop mode: everything can move, nothing to copy
        else:
            out = self.source.copy()
            out[r.y0 : r.y1, r.x0 : r.x1] = warped
        draw_mouth(out, q, self.style, self.opening_px(c), self.rig.teeth_ids)
        if c.blink > 0.0:
            shade_slits(out, q, c.blink, self.lash, 0.008 * self.rig.eye_distance)
        return out


def _box(points: np.ndarray, pad: float) -> Region:
    lo = np.floor(points.min(axis=0) - pad).astype(int)
    hi = np.ceil(points.max(axis=0) + pad).astype(int) + 1
    return Region(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))


class MeshRenderer:
    """Mesh-warp renderer for one prepared avatar.

    ``size``: output crop size (256 or 512); the avatar's crop is resampled if it was
    prepared at another size. The crop is the avatar's talking-head frame
    (``PreparedAvatar.head_framed``: SadTalker's square moved down to show the neck, so the
    jaw moves inside the picture); ``self.avatar`` is that framing. ``render(...)`` ->
    (size, size, 3) uint8; ``render_full(...)`` -> the photo's size (``avatar.original``).
    The full-photo view is built on first use.
    """

    def __init__(self, avatar: PreparedAvatar, size: int | None = None) -> None:
        avatar = avatar.head_framed()
        self.avatar = avatar
        self.size = int(size or avatar.size)
        image, landmarks = avatar.image, avatar.landmarks
        if self.size != avatar.size:
            k = self.size / avatar.size
            interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
            image = cv2.resize(image, (self.size, self.size), interpolation=interp)
            landmarks = landmarks.copy()
            landmarks[:, :2] = (landmarks[:, :2] + 0.5) * k - 0.5
            landmarks[:, 2] *= k
        upscale = self.size / max(float(avatar.crop_box[2]), 1.0)
        self._crop = _View.build(image, landmarks, upscale)
        self._full: _View | None = None

    @property
    def full_size(self) -> tuple[int, int]:
        """(width, height) of ``render_full`` frames."""
        h, w = self.avatar.original.shape[:2]
        return w, h

    def render(
        self,
        pitch: float = 0.0,
        yaw: float = 0.0,
        roll: float = 0.0,
        mouth_open: float = 0.0,
        mouth_wide: float = 0.0,
        blink: float = 0.0,
        gaze_x: float = 0.0,
        gaze_y: float = 0.0,
    ) -> np.ndarray:
        return self.render_controls(
            FaceControls(pitch, yaw, roll, mouth_open, mouth_wide, blink, gaze_x, gaze_y)
        )

    def render_controls(self, controls: FaceControls) -> np.ndarray:
        return self._crop.render(controls.clamped())

    def render_full(
        self,
        pitch: float = 0.0,
        yaw: float = 0.0,
        roll: float = 0.0,
        mouth_open: float = 0.0,
        mouth_wide: float = 0.0,
        blink: float = 0.0,
        gaze_x: float = 0.0,
        gaze_y: float = 0.0,
    ) -> np.ndarray:
        return self.render_full_controls(
            FaceControls(pitch, yaw, roll, mouth_open, mouth_wide, blink, gaze_x, gaze_y)
        )

    def render_full_controls(self, controls: FaceControls) -> np.ndarray:
        if self._full is None:
            self._full = _View.build(self.avatar.original, self.avatar.original_landmarks)
        return self._full.render(controls.clamped())

    # Introspection used by tests and the bench.
    @property
    def crop_view(self) -> _View:
        return self._crop
