"""Audio articulator (default path): per-frame mel window -> mouth opening and lip positions.

A small, causal, rule-based lip source used when no neural network runs. It reads only the
columns of SadTalker's 80 x 16 mel window that belong to the current video frame (columns
7..9 by default: mel rows centred 40 ms before to 20 ms before the end of the frame, each
reading +-25 ms), which are final at any feature lookahead, so it declares **no lookahead**
(``delay_frames = 0``).

Per frame, band levels in dB of mel-band power (a window value v is ``12.5 v - 50`` dB):

* ``drive``, 250-1100 Hz, the first-formant region. The jaw follows it: open vowels (F1
  600-800 Hz) are loud there; close vowels, nasals, fricatives and closures are not. Per
  column, then half the quietest column + half the mean, so a 60 ms /m/ or /p/ closure
  still pulls the frame down.
* Normalisation (``_LevelNormaliser``): a noise floor by minimum statistics (minimum over
  ~3 s in four sub-windows: falls at once, rises at most ``floor_rise_db_per_s``) and a speech
  peak (moves toward louder frames at once, decays slowly only while speech is present, and
  is never less than ``min_span_db`` above the floor, so a long silence cannot stretch noise
  into "speech"). ``(level - bottom) / (peak - bottom)`` clipped to [0, 1], with
  ``bottom = max(floor + gate_db, peak - range_db)``: below the gate the mouth is shut.
  Everything is relative to the tracked floor and peak, so the input level does not matter.
* Least opening of voiced sounds: ``sonorant_weight`` x the normalised broad-band
  (80-4000 Hz) loudness, so close vowels (/i/, /u/) part the lips a little.
* Reductions: fricatives (3.5-7.7 kHz well above the drive) and nasal murmur (energy below
  250 Hz as strong as the first-formant band and above the 1.7-3 kHz band) close the mouth.
* Smoothing: one pole, fast attack (opening) and a slightly slower release (closing); a small
  dead zone makes the visible opening exactly 0 at rest, so silence is perfectly still.
* ``mouth_wide`` in [-1, 1], the lips' shape (spread > 0, rounded < 0): from formant-like
  features of the same columns (``msadtalker.formants``: F1-F3 by linear prediction on the
  mel envelope). Voiced frames: spreading for front vowels (high F2: "ee"), rounding for
  close/mid vowels with a low F2 or F3 ("oo", "oh", "w"); weighted by the broad-band
  loudness, so silence and murmur stay neutral. Fricatives: the centroid of their hiss
  (2-7.7 kHz) spreads the lips for /s/ (high) and rounds them for /sh/ (low). Smoothed by
  one pole (``wide_smoothing``); exactly 0 at rest.

Units of the lip positions: vertical displacement from the closed rest position, in mouth
widths (corner to corner), positive downward (image y). ``upper_lip = -upper_gain * open``
(a small raise), ``lower_lip = lower_gain * open`` (the jaw drop): at full opening the lips
are 0.4 mouth widths apart. ``nominal_range`` is the lower lip's typical peak-to-peak range
in speech (the larger of the two), which the silence weighter uses to floor its running
normalisation range.

All state is explicit (``reset``, ``reset_calibration``); the output depends only on the
sequence of windows pushed, so how the audio was chunked upstream cannot change it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from msadtalker.audio.mel import mel_band_edges
from msadtalker.formants import ShapeConfig, formants, lip_shape
from msadtalker.timing import FPS


@dataclass(frozen=True)
class ArticulatorConfig:
    """Tunables of ``AudioArticulator`` (levels in dB, smoothing steps per 40 ms frame)."""

    # Window columns read (first, last + 1): the current frame's rows s_i + 6 .. s_i + 9.
    columns: tuple[int, int] = (7, 10)
    drive_band_hz: tuple[float, float] = (250.0, 1100.0)
    hiss_band_hz: tuple[float, float] = (2000.0, 7700.0)  # sibilant centroid: /s/ vs /sh/
    high_band_hz: tuple[float, float] = (3500.0, 7700.0)  # fricative noise
    low_band_hz: tuple[float, float] = (80.0, 250.0)  # nasal murmur, voicing
    front_band_hz: tuple[float, float] = (1700.0, 3000.0)  # F2/F3 of front vowels
    broad_band_hz: tuple[float, float] = (80.0, 4000.0)  # overall voiced loudness
    floor_window_s: float = 3.0  # minimum-statistics span
    floor_rise_db_per_s: float = 3.0  # fastest rise of the noise floor
    gate_db: float = 5.0  # drive must exceed the floor by this much to open the mouth
    range_db: float = 27.0  # drive range mapped onto 0..1 below the speech peak
    min_weight: float = 0.5  # per-frame drive: this share of the quietest column, rest mean
    curve: float = 1.0  # exponent of the mapping (> 1: only the loudest vowels open fully)
    min_span_db: float = 18.0  # the speech peak is kept at least this far above the floor
    peak_attack: float = 0.5  # per-frame step of the peak toward a louder frame
    peak_release_db_per_s: float = 2.0  # peak decay while speech is present
    sonorant_weight: float = 0.3  # least opening of a voiced frame at full broad loudness
    fricative_db: float = 10.0  # high band this far above the drive starts the reduction
    fricative_span_db: float = 10.0  # ... reaching full reduction this much further
    fricative_reduction: float = 0.6  # opening multiplied by (1 - this) for full fricatives
    # Nasality score = min(low - drive + nasal_drive_db, low - front - nasal_front_db).
    nasal_drive_db: float = 6.0
    nasal_front_db: float = 4.0
    nasal_span_db: float = 6.0
    nasal_reduction: float = 0.8
    attack: float = 0.8  # per-frame smoothing step when opening
    release: float = 0.7  # per-frame smoothing step when closing
    dead_zone: float = 0.02  # openings below this are rest (exactly 0)
    shape: ShapeConfig = field(default_factory=ShapeConfig)  # formants -> round / spread
    round_gain: float = 1.25  # mouth_wide = spread_gain * spreading - round_gain * rounding
    spread_gain: float = 1.0
    voiced_level: float = 0.35  # broad loudness (0..1) at which the vowel shape is full
    sibilant_hz: tuple[float, float] = (3300.0, 4700.0)  # hiss centroid: /sh/ .. /s/
    sibilant_gain: float = 0.6
    wide_smoothing: float = 0.5
    upper_gain: float = 0.08  # upper lip raise at full opening (mouth widths)
    lower_gain: float = 0.32  # lower lip drop at full opening (mouth widths)
    typical_open_range: float = 0.9  # mouth_open peak-to-peak in ordinary speech

    def validate(self) -> None:
        bands = (
            "drive_band_hz",
            "hiss_band_hz",
            "sibilant_hz",
            "high_band_hz",
            "low_band_hz",
            "front_band_hz",
            "broad_band_hz",
        )
        for name in bands:
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi:
                raise ValueError(f"articulator {name} must be (lo, hi) with 0 <= lo < hi")
        for name in ("attack", "release", "peak_attack", "wide_smoothing"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"articulator {name} must be in (0, 1]")
        if not 0 <= self.columns[0] < self.columns[1] <= 10:
            raise ValueError("articulator columns must lie within the always-final 0..9")
        if self.floor_window_s <= 0 or self.range_db <= 0 or self.min_span_db <= 0:
            raise ValueError("articulator floor window, range and min span must be > 0")
        if not 0 <= self.dead_zone < 1 or not 0 <= self.fricative_reduction <= 1:
            raise ValueError("articulator dead_zone must be in [0, 1), reduction in [0, 1]")
        if self.voiced_level <= 0:
            raise ValueError("articulator voiced_level must be > 0")
        self.shape.validate()


@dataclass(frozen=True, slots=True)
class LipPose:
    """One frame of the articulator's output (see the module docstring for units)."""

    mouth_open: float
    mouth_wide: float
    upper_lip: float
    lower_lip: float


@cache
def _band_centres() -> np.ndarray:
    centres = mel_band_edges()[1:-1]
    centres.setflags(write=False)
    return centres


def _band(lo_hi: tuple[float, float]) -> np.ndarray:
    centres = _band_centres()
    mask = (centres >= lo_hi[0]) & (centres < lo_hi[1])
    if not mask.any():
        raise ValueError(f"no mel band between {lo_hi[0]} and {lo_hi[1]} Hz")
    return np.flatnonzero(mask)


def _column_levels_db(band_columns: np.ndarray) -> np.ndarray:
    """(bands, columns) power -> each column's band level in dB."""
    return np.asarray(10.0 * np.log10(np.maximum(band_columns.mean(axis=0), 1e-12)))


class _MinimumTracker:
    """Minimum statistics: min over ``subwindows`` sub-windows of ``length`` frames each,
    plus the running one; the output rises by at most ``rise`` dB per frame."""

    def __init__(self, length: int, subwindows: int, rise: float) -> None:
        self._length = length
        self._mins: deque[float] = deque(maxlen=subwindows)
        self._rise = rise
        self.reset()

    def reset(self) -> None:
        self._mins.clear()
        self._current = float("inf")
        self._count = 0
        self._value: float | None = None

    def push(self, level: float) -> float:
        self._current = min(self._current, level)
        self._count += 1
        raw = min([self._current, *self._mins])
        if self._count == self._length:
            self._mins.append(self._current)
            self._current = float("inf")
            self._count = 0
        if self._value is None or raw <= self._value:
            self._value = raw
        else:
            self._value = min(raw, self._value + self._rise)
        return self._value


class _LevelNormaliser:
    """A band level in dB -> 0..1 relative to its tracked noise floor and speech peak.

    Floor: minimum statistics. Peak: moves part of the way toward a louder frame at once,
    decays slowly while the level is above the bottom of the range (speech), holds in
    silence, and never sits less than ``min_span_db`` above the floor, so a long silence
    cannot turn noise into "speech". Mapping: ``(level - bottom) / (peak - bottom)`` with
    ``bottom = max(floor + gate_db, peak - range_db)``.
    """

    def __init__(self, config: ArticulatorConfig) -> None:
        self._cfg = config
        sub = max(1, round(config.floor_window_s * FPS / 4))
        self._floor = _MinimumTracker(sub, 4, config.floor_rise_db_per_s / FPS)
        self._release = config.peak_release_db_per_s / FPS
        self.reset()

    def reset(self) -> None:
        self._floor.reset()
        self.peak: float | None = None
        self.floor: float | None = None

    def push(self, level: float) -> float:
        cfg = self._cfg
        floor = self._floor.push(level)
        peak = floor + cfg.min_span_db if self.peak is None else self.peak
        bottom = max(floor + cfg.gate_db, peak - cfg.range_db)
        if level > peak:
            peak += cfg.peak_attack * (level - peak)
        elif level > bottom:
            peak -= self._release
        peak = max(peak, floor + cfg.min_span_db)
        bottom = max(floor + cfg.gate_db, peak - cfg.range_db)
        self.peak, self.floor = peak, floor
        return min(max((level - bottom) / (peak - bottom), 0.0), 1.0)


class AudioArticulator:
    """``push(mel_window) -> LipPose``; one call per video frame. Delay: 0 frames."""

    def __init__(self, config: ArticulatorConfig | None = None) -> None:
        self.config = config or ArticulatorConfig()
        self.config.validate()
        cfg = self.config
        self._drive = _band(cfg.drive_band_hz)
        self._hiss = _band(cfg.hiss_band_hz)
        self._high = _band(cfg.high_band_hz)
        self._low = _band(cfg.low_band_hz)
        self._front = _band(cfg.front_band_hz)
        self._hiss_hz = _band_centres()[self._hiss]
        self._columns = slice(*cfg.columns)
        self._broad = _band(cfg.broad_band_hz)
        self._drive_level = _LevelNormaliser(cfg)
        self._broad_level = _LevelNormaliser(cfg)
        self.reset_calibration()

    @property
    def delay_frames(self) -> int:
        return 0

    @property
    def nominal_range(self) -> float:
        """Typical peak-to-peak range of the lower lip during speech (mouth widths)."""
        return self.config.lower_gain * self.config.typical_open_range

    def reset(self) -> None:
        """Back to rest: mouth closed and neutral. The level calibration (noise floor,
        speech peak) describes the input channel, not the utterance, and is kept."""
        self._open = 0.0
        self._wide = 0.0

    def reset_calibration(self) -> None:
        """Forget everything, including the noise floor and speech peak (a new input)."""
        self._drive_level.reset()
        self._broad_level.reset()
        self.reset()

    def push(self, mel_window: np.ndarray) -> LipPose:
        """One frame's (80, 16) mel window (SadTalker's normalised log-mel) -> ``LipPose``."""
        window = np.asarray(mel_window, dtype=np.float64)
        if window.shape != (80, 16):
            raise ValueError(f"expected an (80, 16) mel window, got {window.shape}")
        cfg = self.config
        columns = np.power(10.0, (12.5 * window[:, self._columns] - 50.0) / 10.0)
        drive_cols = _column_levels_db(columns[self._drive])
        drive = float(cfg.min_weight * drive_cols.min() + (1 - cfg.min_weight) * drive_cols.mean())
        broad = float(_column_levels_db(columns[self._broad]).mean())
        high = float(_column_levels_db(columns[self._high]).mean())
        # Nasal murmur (m, n, ng): the spectrum falls steeply above ~400 Hz, so the lowest
        # band is about as strong as the first-formant band and well above the 1.7-3 kHz
        # band. Open vowels fail the first test, /i/ and /u/ (strong low energy too) the
        # second.
        low_cols = _column_levels_db(columns[self._low])
        front_cols = _column_levels_db(columns[self._front])
        nasal = float(
            np.minimum(
                low_cols - drive_cols + cfg.nasal_drive_db,
                low_cols - front_cols - cfg.nasal_front_db,
            ).max()
        )
        voiced = self._broad_level.push(broad)  # broad-band loudness, 0..1
        fricative = self._fricative(high, drive)
        self._open = self._smooth(self._open, self._opening_target(drive, voiced, fricative, nasal))
        # Dead zone: the visible opening reaches exactly 0 continuously.
        mouth_open = max(0.0, (self._open - cfg.dead_zone) / (1.0 - cfg.dead_zone))
        target = self._shape_target(columns, voiced, fricative)
        self._wide += cfg.wide_smoothing * (target - self._wide)
        if target == 0.0 and abs(self._wide) < 0.01:
            self._wide = 0.0
        return LipPose(
            mouth_open=mouth_open,
            mouth_wide=self._wide,
            upper_lip=0.0 - cfg.upper_gain * mouth_open,  # no -0.0 at rest
            lower_lip=cfg.lower_gain * mouth_open,
        )

    # ------------------------------------------------------------------ internals

    def _opening_target(self, drive: float, voiced: float, fricative: float, nasal: float) -> float:
        cfg = self.config
        jaw = float(self._drive_level.push(drive) ** cfg.curve)
        # Voiced sounds with a weak first formant (close vowels /i/ /u/, liquids) still part
        # the lips a little: a share of the broad-band loudness is the least opening.
        sonorant = cfg.sonorant_weight * voiced
        nasality = min(max(nasal / cfg.nasal_span_db, 0.0), 1.0)
        return (
            max(jaw, sonorant)
            * (1.0 - cfg.fricative_reduction * fricative)
            * (1.0 - cfg.nasal_reduction * nasality)
        )

    def _fricative(self, high: float, drive: float) -> float:
        cfg = self.config
        score = (high - drive - cfg.fricative_db) / cfg.fricative_span_db
        return min(max(score, 0.0), 1.0)

    def _shape_target(self, columns: np.ndarray, voiced: float, fricative: float) -> float:
        """The lips' target shape in [-1, 1] for this frame (see the module docstring)."""
        cfg = self.config
        vowel = min(voiced / cfg.voiced_level, 1.0) * (1.0 - fricative)
        target = 0.0
        if vowel > 0.0:
            rounding, spreading = lip_shape(formants(columns.mean(axis=1)), cfg.shape)
            target = vowel * (cfg.spread_gain * spreading - cfg.round_gain * rounding)
        if fricative > 0.0:
            hiss = columns[self._hiss].mean(axis=1)
            centroid = float((hiss * self._hiss_hz).sum() / max(float(hiss.sum()), 1e-30))
            lo, hi = cfg.sibilant_hz
            sibilant = min(max(2.0 * (centroid - lo) / (hi - lo) - 1.0, -1.0), 1.0)
            target += fricative * cfg.sibilant_gain * sibilant
        return min(max(target, -1.0), 1.0)

    def _smooth(self, current: float, target: float) -> float:
        cfg = self.config
        step = cfg.attack if target > current else cfg.release
        value = current + step * (target - current)
        if target == 0.0 and value < 0.5 * cfg.dead_zone:
            return 0.0  # invisible already (below the dead zone): settle the state exactly
        return value
