"""What flows through the pipeline: one small frozen dataclass per stage boundary.

audio chunk -> FeatureFrame -> LipFrame -> SilenceFrame -> MotionFrame -> VideoFrame

Each frame-level object wraps the one it was made from, so the last object of a frame carries
its whole history (the trace writer reads every column from a ``MotionFrame``) and its frame
index and media timestamp without copying them at every step. Arrays inside are never mutated
after construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from msadtalker.timing import FPS, SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A run of mono 16 kHz float32 samples in [-1, 1], ``start`` samples into the stream."""

    samples: np.ndarray
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.samples)

    @property
    def time_s(self) -> float:
        return self.start / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class FeatureFrame:
    """Audio features of video frame ``index``.

    ``audio``: (640,) float32, the samples this frame spans (they travel with the frame so
    that the audio sent out with a video frame is in sync by construction).
    ``mel``: (80, 16) float32, SadTalker's per-frame log-mel window (mel bins x mel frames),
    cut as the official code cuts it; columns past what the feature lookahead allowed are
    clamped to the last final mel frame, as the official code treats the end of a clip.
    """

    index: int
    audio: np.ndarray
    mel: np.ndarray

    @property
    def time_s(self) -> float:
        return self.index / FPS


@dataclass(frozen=True, slots=True)
class LipFrame:
    """Lip signal of one frame: what the silence weighter reads and the renderer animates.

    ``upper_lip`` / ``lower_lip``: lip positions in the lip source's own units (the weighter
    min-max normalises them). ``mouth_open`` in [0, 1]; ``mouth_wide`` in [-1, 1]
    (spread > 0, rounded < 0). ``expression``: on the neural path the 64 ExpNet coefficients
    as a delta from the source photo's own expression (blink excluded; zero = the photo's
    expression, see ``msadtalker.neural.motion``), ``None`` on the default path.
    """

    features: FeatureFrame
    upper_lip: float
    lower_lip: float
    mouth_open: float
    mouth_wide: float = 0.0
    expression: np.ndarray | None = None

    @property
    def index(self) -> int:
        return self.features.index

    @property
    def time_s(self) -> float:
        return self.features.time_s


@dataclass(frozen=True, slots=True)
class SilenceFrame:
    """``silent``: raw per-frame detection (eq. 4); ``weight``: smoothed w~ in [0, 1] (eq. 5)."""

    lips: LipFrame
    silent: bool
    weight: float

    @property
    def index(self) -> int:
        return self.lips.index

    @property
    def time_s(self) -> float:
        return self.lips.time_s


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Head rotation offsets from the source photo's pose, in degrees."""

    pitch: float
    yaw: float
    roll: float


@dataclass(frozen=True, slots=True)
class MotionFrame:
    """Everything a renderer needs for one frame.

    ``pose``: the pose to render (eq. 6 applied, plus the optional idle micro-motion);
    ``pose_raw``: the cosine generator's output before the silence weighting. ``mouth_open``:
    the lip source's opening damped by the silence weight; ``mouth_wide``: the lips' shape
    in [-1, 1] (spread > 0, rounded < 0), damped the same way (0 on the neural path, where
    the networks shape the lips). ``blink``: eyelid closure in [0, 1]. ``gaze``: where the
    eyes look, (right, down) as fractions of the largest comfortable shift (the optional
    idle gaze drift; (0, 0) = as in the photo). ``expression``: on the neural path,
    the 64 ExpNet coefficients damped by the silence weight the same way as the mouth.
    ``kp_driving``: on the neural path, the (15, 3) driving keypoints of the frame, set by the
    keypoint stage just before the generator (``None`` until then and on the default path).
    """

    silence: SilenceFrame
    pose: HeadPose
    pose_raw: HeadPose
    mouth_open: float
    blink: float
    expression: np.ndarray | None = None
    kp_driving: np.ndarray | None = None
    mouth_wide: float = 0.0
    gaze: tuple[float, float] = (0.0, 0.0)

    @property
    def index(self) -> int:
        return self.silence.index

    @property
    def time_s(self) -> float:
        return self.silence.time_s

    @property
    def lips(self) -> LipFrame:
        return self.silence.lips

    @property
    def audio(self) -> np.ndarray:
        return self.silence.lips.features.audio


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """A rendered RGB frame, (H, W, 3) uint8, with the motion that produced it."""

    motion: MotionFrame
    image: np.ndarray

    @property
    def index(self) -> int:
        return self.motion.index

    @property
    def time_s(self) -> float:
        return self.motion.time_s

    @property
    def audio(self) -> np.ndarray:
        return self.motion.audio


@dataclass(frozen=True, slots=True)
class VoiceChunk:
    """Mic audio on the session's time line, handed on as soon as it is in (before the frames
    made from it): 16 kHz mono float32 from sample position ``start`` (frame ``i`` covers
    positions ``i * 640`` to ``(i + 1) * 640``)."""

    start: int
    audio: np.ndarray
