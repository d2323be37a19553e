"""Where mic-to-mouth latency goes, from what a loopback client sends and gets back.

The returned voice is stamped with the session's time line (48 kHz time stamps = 3 x the
16 kHz position; video frame ``k`` is made from positions ``640 k`` on), so matching the
returned audio against the clip the client played says which clip sample went into which
frame: session position
``p = s + offset`` (16 kHz samples; frame ``k`` holds positions ``[640 k, 640 (k + 1))``),
found at each onset (the sharp onset after silence pins it; the offset can change during a
session when the ingest re-anchors).
An onset at clip sample ``o`` that first shows as an open mouth in received frame ``k``
(arrival ``r``) then splits exactly into

* ``fill``: onset -> end of its own frame ``j`` (the rest of the 40 ms frame must be heard
  first; 0..40 ms, spread evenly by the test signal),
* ``ramp``: ``(k - j) x 40 ms``, frames between the onset's frame and the first one whose mouth
  is open past the threshold (the lip source's rise and the silence weight's),
* ``designed``: the pipeline's lookahead, ``delay_frames x 40 ms`` (features + silence window),
* ``overhead``: the rest, ``r - capture(end of frame k's audio) - designed``: the wait for the
  mic packet that completes the frame (packets are 20 ms, frames 40), mic encode / network /
  decode / resampling, the motion and render steps, video encode / network / decode.

``overhead`` is also measured for every received frame (with the offset of the nearest
onset). The offset is found to a sample, less the codec and resampler delays (a few ms, which
land in ``overhead``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import correlate, resample_poly

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME

FRAME_MS = 1000.0 * SAMPLES_PER_FRAME / SAMPLE_RATE
AUDIO_RATE = 48_000


@dataclass(frozen=True)
class OnsetBreakdown:
    fill_ms: float
    ramp_ms: float
    designed_ms: float
    overhead_ms: float

    @property
    def total_ms(self) -> float:
        return self.fill_ms + self.ramp_ms + self.designed_ms + self.overhead_ms


def session_line(returned: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """The returned audio (``(pts, samples)`` at 48 kHz, pts on the session's time line) as
    one 16 kHz signal indexed by session position."""
    if not returned:
        return np.zeros(0, dtype=np.float32)
    end = max(pts + len(samples) for pts, samples in returned)
    line = np.zeros(end, dtype=np.float32)
    for pts, samples in returned:
        if pts >= 0:
            line[pts : pts + len(samples)] = samples
    return resample_poly(line, SAMPLE_RATE, AUDIO_RATE).astype(np.float32)


def local_offset(
    line: np.ndarray,
    clip: np.ndarray,
    onset: int,
    lo: int = -SAMPLE_RATE,
    hi: int = 2 * SAMPLE_RATE,
) -> int | None:
    """Session position of clip sample 0 near clip sample ``onset`` (a sharp onset after
    silence), searched over offsets ``lo .. hi``: the clip's ``[onset - 50 ms, onset +
    400 ms)`` matched against the session line. Local, so a time line that was re-anchored
    or shifted during the session is followed."""
    a, b = max(0, onset - SAMPLE_RATE // 20), min(len(clip), onset + 2 * SAMPLE_RATE // 5)
    segment = clip[a:b]
    first, last = max(0, a + lo), min(len(line), b + hi)
    region = line[first:last]
    if len(segment) < SAMPLE_RATE // 10 or len(region) < len(segment):
        return None
    corr = correlate(region, segment, mode="valid", method="fft")
    # Normalise by the region's energy under the segment, so loud stretches do not win.
    energy = np.convolve(region.astype(np.float64) ** 2, np.ones(len(segment)), mode="valid")
    score = corr / np.sqrt(np.maximum(energy, 1e-12))
    if not np.any(score > 0):
        return None
    return int(first + int(np.argmax(score)) - a)


def session_offset(
    returned: Sequence[tuple[int, np.ndarray]], clip: np.ndarray, onsets: Sequence[int]
) -> list[int | None]:
    """``local_offset`` at each onset."""
    line = session_line(returned)
    return [local_offset(line, clip, onset) for onset in onsets]


def onset_breakdown(
    onset: int,
    shown_frame: int,
    arrival: float,
    offset: int,
    capture_time: Callable[[int], float],
    delay_frames: int,
) -> OnsetBreakdown:
    """The split of one onset's latency (module docstring); the parts add up to
    ``arrival - capture_time(onset)``."""
    position = onset + offset
    own_frame = position // SAMPLES_PER_FRAME
    fill = ((own_frame + 1) * SAMPLES_PER_FRAME - position) * 1000.0 / SAMPLE_RATE
    ramp = (shown_frame - own_frame) * FRAME_MS
    designed = delay_frames * FRAME_MS
    overhead = frame_overhead_ms(shown_frame, arrival, offset, capture_time, delay_frames)
    return OnsetBreakdown(fill, ramp, designed, overhead)


def frame_overhead_ms(
    frame: int,
    arrival: float,
    offset: int,
    capture_time: Callable[[int], float],
    delay_frames: int,
) -> float:
    """Arrival of frame ``frame`` - capture of its last audio sample - the designed delay."""
    last_sample = (frame + 1) * SAMPLES_PER_FRAME - offset
    return (arrival - capture_time(last_sample)) * 1000.0 - delay_frames * FRAME_MS


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not len(values):
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "mean": round(float(np.mean(values)), 2),
        "max": round(float(np.max(values)), 2),
    }
