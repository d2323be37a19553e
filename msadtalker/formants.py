"""Formant-like features of one mel frame: F1, F2, F3 by linear prediction on its envelope.

The articulator sees SadTalker's 80-band log-mel, not the waveform. The band powers are laid
on a linear 0-4 kHz grid and read as a power spectrum: its inverse FFT is an autocorrelation,
from which an all-pole model of order 10 is solved (the normal equations); the peaks of the
model's spectrum are the formants (both steps are small precomputed linear maps). Low order
smooths over the harmonics that the narrow low mel bands resolve. On eSpeak NG's held
vowels this reads F1/F2/F3 within ~50 / ~100 Hz of the same analysis on the waveform (e.g.
/i:/ 282/2264/2809 Hz, /u:/ 350/1527/2226, /O:/ 492/839/2652, /A:/ 788/1062/2811).

What the lips do follows from them (``lip_shape``):

* rounding (/u/ /U/ /O/ /w/, the "oh" of /oU/) lowers F2 and F3 while F1 stays low (a close or
  mid vowel): rounding = closeness(F1) x max(backness(F2), 0.7 lowness(F3));
* spreading (/i:/ /I/, "ee") raises F2 toward the front: spreading = frontness(F2).

Cost: ~50-90 microseconds per frame (a 10 x 10 solve and a 129-point spectrum).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from msadtalker.audio.mel import mel_band_edges

ORDER = 10
TOP_HZ = 4000.0
GRID_STEP_HZ = 31.25
MIN_FORMANT_HZ = 180.0


@dataclass(frozen=True, slots=True)
class Formants:
    """Estimated F1, F2, F3 in Hz (NaN where none was found)."""

    f1: float
    f2: float
    f3: float


@dataclass(frozen=True)
class ShapeConfig:
    """Formant ranges that map onto lip rounding and spreading (Hz)."""

    close_f1_hz: tuple[float, float] = (550.0, 800.0)  # F1 below the first: fully close
    back_f2_hz: tuple[float, float] = (1100.0, 1700.0)  # F2 below the first: fully back
    low_f3_hz: tuple[float, float] = (2250.0, 2550.0)  # F3 below the first: rounded
    f3_share: float = 0.7  # weight of the F3 cue against the F2 one
    front_f2_hz: tuple[float, float] = (1750.0, 2200.0)  # F2 above the last: fully spread

    def validate(self) -> None:
        for name in ("close_f1_hz", "back_f2_hz", "low_f3_hz", "front_f2_hz"):
            lo, hi = getattr(self, name)
            if not 0 < lo < hi:
                raise ValueError(f"articulator shape {name} must be (lo, hi) with 0 < lo < hi")
        if not 0 <= self.f3_share <= 1:
            raise ValueError("articulator shape f3_share must be in [0, 1]")


@dataclass(frozen=True)
class _Bases:
    """Precomputed linear maps: band powers -> autocorrelation lags 0..ORDER
    (interpolation onto the grid composed with the inverse FFT), the Toeplitz index pattern,
    and the cosine / sine tables that evaluate the predictor on the frequency grid."""

    lags: np.ndarray  # (ORDER + 1, 80)
    toeplitz: np.ndarray  # (ORDER, ORDER) int
    cos: np.ndarray  # (K, ORDER + 1)
    sin: np.ndarray  # (K, ORDER + 1)
    hz: np.ndarray  # (K,) frequency of each grid point


@cache
def _bases() -> _Bases:
    centres = mel_band_edges()[1:-1]
    grid = np.arange(0.0, TOP_HZ + GRID_STEP_HZ / 2, GRID_STEP_HZ)
    # Linear interpolation of each unit band onto the grid, then the inverse real FFT of the
    # grid as the half of an even power spectrum: both linear, so one (ORDER + 1, 80) map.
    unit = np.eye(len(centres))
    on_grid = np.stack([np.interp(grid, centres, row) for row in unit], axis=1)  # (G, 80)
    lags = np.fft.irfft(on_grid, n=2 * (len(grid) - 1), axis=0)[: ORDER + 1]
    k = np.arange(ORDER)
    toeplitz = np.abs(k[:, None] - k[None, :])
    omega = np.pi * grid / TOP_HZ
    taps = np.arange(ORDER + 1)
    return _Bases(
        lags=np.ascontiguousarray(lags),
        toeplitz=toeplitz,
        cos=np.cos(np.outer(omega, taps)),
        sin=np.sin(np.outer(omega, taps)),
        hz=grid,
    )


def formants(band_power: np.ndarray) -> Formants:
    """F1-F3 of one frame's (80,) mel band powers (linear power, any scale)."""
    b = _bases()
    r = b.lags @ band_power
    if not r[0] > 0.0:
        return Formants(np.nan, np.nan, np.nan)
    r[0] *= 1.0 + 1e-6  # white-noise floor: keeps the normal equations well posed
    try:
        a = np.linalg.solve(r[b.toeplitz], -r[1 : ORDER + 1])
    except np.linalg.LinAlgError:
        return Formants(np.nan, np.nan, np.nan)
    taps = np.concatenate([[1.0], a])
    re, im = b.cos @ taps, b.sin @ taps
    level = -np.log(re * re + im * im + 1e-30)  # log of the all-pole spectrum
    inner = level[1:-1]
    peaks = np.flatnonzero((inner > level[:-2]) & (inner >= level[2:])) + 1
    found: list[float] = []
    for i in peaks:
        # Parabolic refinement of the peak; a peak must stand out from its valley
        # neighbours to count (a shoulder of the spectral tilt is not a formant).
        left, mid, right = level[i - 1], level[i], level[i + 1]
        curvature = left - 2.0 * mid + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        hz = float(b.hz[i] + offset * GRID_STEP_HZ)
        if hz > MIN_FORMANT_HZ:
            found.append(hz)
        if len(found) == 3:
            break
    found += [np.nan] * (3 - len(found))
    return Formants(found[0], found[1], found[2])


def _ramp_down(value: float, span: tuple[float, float]) -> float:
    """1 below span[0], 0 above span[1], linear between; 0 for NaN."""
    if np.isnan(value):
        return 0.0
    return float(min(max((span[1] - value) / (span[1] - span[0]), 0.0), 1.0))


def lip_shape(f: Formants, config: ShapeConfig) -> tuple[float, float]:
    """(rounding, spreading), each in [0, 1], of a voiced frame's formants."""
    close = _ramp_down(f.f1, config.close_f1_hz)
    back = _ramp_down(f.f2, config.back_f2_hz)
    low_f3 = _ramp_down(f.f3, config.low_f3_hz)
    rounding = close * max(back, config.f3_share * low_f3)
    spreading = 1.0 - _ramp_down(f.f2, config.front_f2_hz) if not np.isnan(f.f2) else 0.0
    return rounding, spreading * (1.0 - rounding)
