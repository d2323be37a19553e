"""Measuring rendered talking-head video from the outside: decode, re-detect, compare.

Import as ``from render_checks import ...`` (``tests/`` is on ``sys.path``, as for
``speech``). Everything here reads pixels and samples only (an mp4 decoded with PyAV, frames
run through the face finder again), so the checks built on it hold for any renderer.

Pose from landmarks: for small angles, a rotation about a pivot moves a point at (x, y, z)
relative to the pivot by dx = roll * y - yaw * z, dy = -roll * x - pitch * z (the renderer's
conventions, ``msadtalker.mesh.controls``), plus a translation that the pivot's placement
adds. ``PoseFit`` solves for (tx, ty, roll, yaw, pitch) by least squares over the rigid
features (eyes, brows, nose, forehead; not the mouth or the jaw, which move with speech). The
depths are the rest landmarks' depths: they only convert pixels to degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from msadtalker.avatar import topology as tp
from msadtalker.avatar.faces import FaceFinder
from msadtalker.timing import SAMPLES_PER_FRAME

# Rigid inner features: eye corners (not the lids: they blink), brows, nose ridge and tip,
# forehead, cheekbones.
RIGID = [33, 133, 263, 362, 70, 63, 105, 66, 107, 336, 296, 334, 293, 300]
RIGID += [1, 4, 5, 195, 197, 6, 168, 10, 151, 9, 8, 234, 454, 127, 356]


@dataclass(frozen=True)
class Decoded:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    pts_s: np.ndarray  # (T,) presentation time of each frame, seconds
    audio: np.ndarray  # (N,) float32 mono, the decoded AAC track
    audio_start_s: float
    video_codec: str
    audio_codec: str
    fps: float
    audio_rate: int
    audio_channels: int
    pix_fmt: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames, pts = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(_seconds(frame.pts, frame.time_base))
        rate = video.average_rate
        info = (video.codec_context.name, float(rate or 0), video.codec_context.pix_fmt)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        chunks, start = [], None
        for aframe in container.decode(audio=0):
            if start is None:
                start = _seconds(aframe.pts, aframe.time_base)
            chunks.append(aframe.to_ndarray().reshape(-1))
        a_info = (audio.codec_context.name, audio.rate, audio.codec_context.layout.nb_channels)
    return Decoded(
        frames=np.stack(frames),
        pts_s=np.array(pts),
        audio=np.concatenate(chunks).astype(np.float32),
        audio_start_s=start or 0.0,
        video_codec=info[0],
        audio_codec=a_info[0],
        fps=info[1],
        audio_rate=int(a_info[1]),
        audio_channels=int(a_info[2]),
        pix_fmt=str(info[2]),
    )


def _seconds(pts: int | None, time_base: Fraction | None) -> float:
    assert pts is not None and time_base is not None, "decoded frame without a timestamp"
    return float(pts * time_base)


def landmarks_of(frames: np.ndarray, finder: FaceFinder | None = None) -> np.ndarray:
    """(T, 468, 3) re-detected landmarks; fails if a frame does not show exactly one face."""
    finder = finder or FaceFinder()
    out = []
    for i, frame in enumerate(frames):
        faces = finder.find(frame)
        assert len(faces) == 1, f"frame {i}: {len(faces)} faces found, expected exactly one"
        out.append(faces[0].landmarks.astype(np.float64))
    return np.stack(out)


class PoseFit:
    """Head pose (roll, yaw, pitch, degrees) of detected landmarks relative to a rest set."""

    def __init__(self, rest: np.ndarray, depth: np.ndarray, pivot: np.ndarray) -> None:
        """``rest``: (468, >=2) landmarks of the rest frame; ``depth``: (468,) their depths
        and ``pivot`` (3,) the rotation pivot, in the same pixels."""
        self.rest = rest[RIGID, :2]
        x = rest[RIGID, 0] - pivot[0]
        y = rest[RIGID, 1] - pivot[1]
        z = depth[RIGID] - pivot[2]
        o, one = np.zeros_like(x), np.ones_like(x)
        self._design = np.vstack(
            [np.column_stack([one, o, y, -z, o]), np.column_stack([o, one, -x, o, -z])]
        )

    def __call__(self, landmarks: np.ndarray) -> tuple[float, float, float]:
        d = landmarks[RIGID, :2] - self.rest
        sol = np.linalg.lstsq(self._design, np.concatenate([d[:, 0], d[:, 1]]), rcond=None)[0]
        roll, yaw, pitch = np.degrees(sol[2:])
        return float(roll), float(yaw), float(pitch)


def frame_rms(audio: np.ndarray, frames: int) -> np.ndarray:
    """RMS of each 640-sample video frame of ``audio`` (zero-padded to ``frames``)."""
    need = frames * SAMPLES_PER_FRAME
    samples = np.zeros(need, np.float64)
    samples[: min(need, len(audio))] = audio[:need]
    return np.asarray(np.sqrt(np.mean(samples.reshape(frames, -1) ** 2, axis=1)))


def mouth_change(frames: np.ndarray, landmarks: np.ndarray, rest_index: int = 0) -> np.ndarray:
    """Per frame: mean absolute difference to the rest frame inside the mouth region, after
    undoing the head motion (similarity fit of the rigid features onto the rest frame)."""
    rest = landmarks[rest_index]
    outer = np.concatenate(
        [rest[list(tp.LIPS_UPPER_OUTER), :2], rest[list(tp.LIPS_LOWER_OUTER[::-1]), :2]]
    )
    h, w = frames.shape[1:3]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
    width = float(np.hypot(*(rest[tp.MOUTH_CORNERS[1], :2] - rest[tp.MOUTH_CORNERS[0], :2])))
    grow = int(0.3 * width) | 1
    region = cv2.dilate(mask, np.ones((grow, grow), np.uint8)) > 0
    reference = frames[rest_index].astype(np.float32)
    out = np.empty(len(frames))
    for i, (frame, lm) in enumerate(zip(frames, landmarks, strict=True)):
        m, _ = cv2.estimateAffinePartial2D(
            lm[RIGID, :2].astype(np.float32), rest[RIGID, :2].astype(np.float32)
        )
        aligned = cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        out[i] = float(np.abs(aligned.astype(np.float32) - reference)[region].mean())
    return out


def lagged_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> dict[int, float]:
    """Pearson r of a[t] with b[t + lag] for lag in [-max_lag, max_lag] (lag > 0: b later)."""
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], float), np.asarray(b[:n], float)
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[: n - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: n + lag])
        out[lag] = float(np.corrcoef(x, y)[0, 1])
    return out


def face_region(landmarks: np.ndarray, shape: tuple[int, ...], grow: int = 9) -> np.ndarray:
    """Boolean (H, W) mask of the convex hull of ``landmarks``, dilated by ``grow`` px."""
    mask = np.zeros(shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(landmarks[:, :2]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return cv2.dilate(mask, np.ones((grow, grow), np.uint8)) > 0
