"""The time base SadTalker fixes: 16 kHz mono audio, 25 video frames per second."""

from __future__ import annotations

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MEL_HOP = 200  # samples between log-mel frames (80 per second)
MEL_FRAMES_PER_VIDEO_FRAME = SAMPLES_PER_FRAME / MEL_HOP  # 3.2


def frame_time(index: int) -> float:
    """Media time in seconds of the start of video frame ``index``."""
    return index / FPS


def frames_from_ms(ms: float) -> int:
    """Whole video frames covered by ``ms`` milliseconds (rounded to nearest)."""
    return max(0, round(ms * FPS / 1000.0))
