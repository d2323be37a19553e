"""Optional idle life: slow gaze shifts and head micro-motion, seeded and causal.

A photo that only moves when it speaks looks frozen between sentences. Two small motions,
each off by default (``IdleConfig``), make a silent avatar look alive while it stays still:

* ``gaze``: the eyes hold a fixation for a while (gamma-distributed, mean ``fixation_s``)
  and then shift to a new target in ~120 ms (a smoothstep over ``shift_frames``), as people
  do; targets are drawn around the photo's own gaze (half of them back to it), within
  ``gaze_amplitude`` of the renderer's largest shift. Output: (right, down) in [-1, 1].
* ``micro_motion``: a sum of three slow sines per head axis (periods 4.7-11.3 s, seeded
  phases), at most ``micro_deg`` degrees: breathing-scale sway, far below the speech pose
  (the silence weighting still brings that pose to rest; this is added on top).

Both depend only on the frame count and the seed, never on the audio, so live and offline
runs of the same seed agree frame for frame. Delay: 0 frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from msadtalker.timing import FPS

_PERIODS_S = (4.7, 7.3, 11.3)


@dataclass(frozen=True)
class IdleConfig:
    gaze: bool = False
    micro_motion: bool = False
    gaze_amplitude: float = 0.5  # share of the renderer's largest eye shift
    fixation_s: float = 2.2  # mean time the eyes rest on one target
    shift_frames: int = 3  # a gaze shift takes this many frames (~120 ms)
    micro_deg: float = 0.15  # largest micro-motion of each head angle, degrees

    def validate(self) -> None:
        if not 0 <= self.gaze_amplitude <= 1:
            raise ValueError("idle gaze_amplitude must be in [0, 1]")
        if self.fixation_s <= 0 or self.shift_frames < 1:
            raise ValueError("idle fixation_s must be > 0 and shift_frames >= 1")
        if not 0 <= self.micro_deg <= 2:
            raise ValueError("idle micro_deg must be in [0, 2] degrees")


class IdleMotion:
    """``step() -> (gaze (right, down), micro (pitch, yaw, roll) degrees)`` per frame."""

    def __init__(self, config: IdleConfig | None = None, seed: int = 0) -> None:
        self.config = config or IdleConfig()
        self.config.validate()
        self._seed = seed
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D1E]))
        self._phases = rng.uniform(0.0, 2.0 * math.pi, size=(3, len(_PERIODS_S)))
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(np.random.SeedSequence([self._seed, 0x6A2E]))
        self._frame = 0
        self._from = (0.0, 0.0)
        self._to = (0.0, 0.0)
        self._shift_start = 0
        self._next_shift = self._fixation_frames()

    def step(self) -> tuple[tuple[float, float], tuple[float, float, float]]:
        cfg = self.config
        gaze = self._gaze() if cfg.gaze else (0.0, 0.0)
        micro = self._micro() if cfg.micro_motion else (0.0, 0.0, 0.0)
        self._frame += 1
        return gaze, micro

    def _fixation_frames(self) -> int:
        mean = self.config.fixation_s * FPS
        return max(self.config.shift_frames + 1, round(float(self._rng.gamma(3.0, mean / 3.0))))

    def _gaze(self) -> tuple[float, float]:
        cfg = self.config
        if self._frame >= self._next_shift:
            self._from = self._current()
            if self._rng.random() < 0.5:
                self._to = (0.0, 0.0)
            else:
                x, y = self._rng.normal(0.0, 0.5, size=2)
                a = cfg.gaze_amplitude
                self._to = (float(np.clip(x, -1, 1) * a), float(np.clip(0.5 * y, -1, 1) * a))
            self._shift_start = self._frame
            self._next_shift = self._frame + self._fixation_frames()
        return self._current()

    def _current(self) -> tuple[float, float]:
        t = (self._frame - self._shift_start) / self.config.shift_frames
        t = min(max(t, 0.0), 1.0)
        s = t * t * (3.0 - 2.0 * t)
        return (
            self._from[0] + s * (self._to[0] - self._from[0]),
            self._from[1] + s * (self._to[1] - self._from[1]),
        )

    def _micro(self) -> tuple[float, float, float]:
        t = self._frame / FPS
        share = self.config.micro_deg / len(_PERIODS_S)
        angles = [
            share
            * sum(math.sin(2 * math.pi * t / p + ph) for p, ph in zip(_PERIODS_S, row, strict=True))
            for row in self._phases
        ]
        return angles[0], angles[1], angles[2]
