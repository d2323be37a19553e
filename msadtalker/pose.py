"""Cosine head pose (MSadTalker §3.1, eqs 1-3), generated causally one frame at a time.

Per axis a in (pitch, yaw, roll):

    P_a(t) = clamp(B_a(t) * E_a(t) + R_a(t), -A_a, A_a),    B_a(t) = A_a * cos(phi_a(t))

Choices the paper leaves open (documented here because they shape the look):

* Amplitudes: pitch 10 deg and roll 8 deg as in the paper; yaw 6 deg. Yaw reveals the most
  occluded geometry (cheek/ear side) and reads as "looking away" when large, so it is kept
  smaller than pitch.
* Frequency: each axis keeps a running phase phi and re-draws its frequency uniformly from
  [f_min, f_max] = [0.8, 1.5] Hz at every completed cycle. The phase stays continuous, so the
  motion never jumps, but successive swings have different durations and the three axes drift
  apart: the result does not look periodic.
* Phase offsets: pitch 0, yaw pi/2, roll pi, so the axes do not peak together.
* Easing envelope E: each cycle draws a gain g_k uniformly in [gain_min, 1] and E moves from the
  previous cycle's gain to g_k with an ease-in-out (half-cosine) curve over the cycle. E starts
  at 0, so the head eases out of the photo's pose instead of starting at +A. Because E only
  changes smoothly and always at most 1, |B * E| <= A.
* Micro-perturbation R: the paper's i.i.d. Gaussian (sigma = 0.05 A) is available
  (``noise="iid"``), but the default is the same sigma low-passed by two cascaded one-pole
  filters (cut-off ``noise_cutoff_hz`` = 1 Hz, inside the band of the swings, so it changes
  each swing's shape rather than adding a faster wiggle) and rescaled to the same stationary
  sigma: i.i.d. noise at 25 fps makes the head visibly jitter (RMS jerk of the pose 8-10x
  higher, of the noise term alone about 12x; ``msadtalker bench motion``).

Everything is seeded per axis, so a given seed reproduces the same motion frame for frame,
whatever way the frames are requested (one at a time or in blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from msadtalker.timing import FPS

AXES = ("pitch", "yaw", "roll")
_PHASE_OFFSETS = (0.0, math.pi / 2.0, math.pi)


@dataclass(frozen=True)
class CosinePoseConfig:
    """Parameters of the cosine pose generator; paper defaults where the paper gives them."""

    amplitude_deg: tuple[float, float, float] = (10.0, 6.0, 8.0)  # pitch, yaw, roll
    freq_min_hz: float = 0.8
    freq_max_hz: float = 1.5
    gain_min: float = 0.35
    noise: Literal["lowpass", "iid"] = "lowpass"
    noise_sigma_frac: float = 0.05
    noise_cutoff_hz: float = 1.0

    def validate(self) -> None:
        if any(a < 0 for a in self.amplitude_deg):
            raise ValueError("pose amplitudes must be >= 0 degrees")
        if not 0 < self.freq_min_hz <= self.freq_max_hz < FPS / 2:
            raise ValueError("pose frequencies need 0 < f_min <= f_max < fps/2")
        if not 0 <= self.gain_min <= 1:
            raise ValueError("pose gain_min must be in [0, 1]")
        if self.noise_sigma_frac < 0 or self.noise_cutoff_hz <= 0:
            raise ValueError("pose noise sigma must be >= 0 and its cut-off > 0")


class _LowpassGaussian:
    """Unit-variance Gaussian noise through two cascaded one-pole low-passes (causal)."""

    def __init__(self, rng: np.random.Generator, cutoff_hz: float, fps: float) -> None:
        self._rng = rng
        self._a = math.exp(-2.0 * math.pi * cutoff_hz / fps)
        b = 1.0 - self._a
        # Stationary std of the cascade, from its impulse response, so output std is 1.
        h1 = b * self._a ** np.arange(4096)
        h2 = np.convolve(h1, h1)[:4096]
        self._scale = 1.0 / math.sqrt(float(np.sum(h2**2)))
        self._y1 = 0.0
        self._y2 = 0.0
        self._primed = False

    def step(self) -> float:
        x = float(self._rng.standard_normal())
        if not self._primed:
            # Start in the stationary distribution rather than at 0 (no warm-up ramp).
            self._y1 = self._y2 = x / self._scale
            self._primed = True
        b = 1.0 - self._a
        self._y1 = self._a * self._y1 + b * x
        self._y2 = self._a * self._y2 + b * self._y1
        return self._y2 * self._scale


class _AxisOscillator:
    """One axis: phase with per-cycle frequency, eased per-cycle gain, noise, clamp."""

    def __init__(
        self, config: CosinePoseConfig, amplitude: float, phase0: float, seed: int, axis: int
    ) -> None:
        self._config = config
        self._amplitude = amplitude
        seq = np.random.SeedSequence([seed, axis])
        cycle_seed, noise_seed = seq.spawn(2)
        self._cycle_rng = np.random.default_rng(cycle_seed)
        noise_rng = np.random.default_rng(noise_seed)
        self._sigma = config.noise_sigma_frac * amplitude
        self._iid_rng = noise_rng
        self._lowpass = _LowpassGaussian(noise_rng, config.noise_cutoff_hz, FPS)
        self._phase0 = phase0
        self._cycle_pos = 0.0  # phase within the current cycle, in [0, 2pi)
        self._freq = self._draw_freq()
        self._gain_from = 0.0
        self._gain_to = self._draw_gain()

    def _draw_freq(self) -> float:
        return float(self._cycle_rng.uniform(self._config.freq_min_hz, self._config.freq_max_hz))

    def _draw_gain(self) -> float:
        return float(self._cycle_rng.uniform(self._config.gain_min, 1.0))

    def step(self) -> tuple[float, float]:
        """Advance one frame; returns (P(t), B(t) * E(t)) in degrees."""
        progress = self._cycle_pos / (2.0 * math.pi)
        ease = 0.5 - 0.5 * math.cos(math.pi * progress)
        envelope = self._gain_from + (self._gain_to - self._gain_from) * ease
        base = self._amplitude * math.cos(self._cycle_pos + self._phase0)
        if self._config.noise == "iid":
            noise = self._sigma * float(self._iid_rng.standard_normal())
        else:
            noise = self._sigma * self._lowpass.step()
        value = min(max(base * envelope + noise, -self._amplitude), self._amplitude)

        self._cycle_pos += 2.0 * math.pi * self._freq / FPS
        if self._cycle_pos >= 2.0 * math.pi:
            self._cycle_pos -= 2.0 * math.pi
            self._freq = self._draw_freq()
            self._gain_from = self._gain_to
            self._gain_to = self._draw_gain()
        return value, base * envelope


class CosinePoseGenerator:
    """Causal, seeded head-pose source: one (pitch, yaw, roll) in degrees per ``step()``.

    Input: nothing but the frame clock. Output: offsets from the photo's pose, each within
    its amplitude. Delay: 0 frames (P(t) depends on t only).
    """

    def __init__(self, config: CosinePoseConfig | None = None, seed: int = 0) -> None:
        self._config = config or CosinePoseConfig()
        self._config.validate()
        self._seed = seed
        self.reset()

    @property
    def config(self) -> CosinePoseConfig:
        return self._config

    @property
    def frame(self) -> int:
        """Index of the frame the next ``step()`` returns."""
        return self._frame

    def reset(self) -> None:
        self._frame = 0
        self._axes = [
            _AxisOscillator(self._config, amp, phase, self._seed, axis)
            for axis, (amp, phase) in enumerate(
                zip(self._config.amplitude_deg, _PHASE_OFFSETS, strict=True)
            )
        ]

    def step(self) -> np.ndarray:
        """Pose of the next frame: float64 array (pitch, yaw, roll) in degrees."""
        self._frame += 1
        return np.array([axis.step()[0] for axis in self._axes])

    def generate(self, n_frames: int) -> np.ndarray:
        """The next ``n_frames`` poses, (n_frames, 3) degrees; same as calling ``step`` n times."""
        return np.array([self.step() for _ in range(n_frames)]).reshape(n_frames, 3)
