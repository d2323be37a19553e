"""Test speech for the live benches: voiced bursts with sharp onsets at known samples.

A glottal pulse train (110-140 Hz, with a little vibrato) through three vowel formants, with
syllable-rate loudness, switched on within one sample and off with a 10 ms fade. Deterministic
for a seed; the onsets fall at every phase of the 40 ms video frame so that latency figures
cover the frame-boundary wait fairly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME

_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (570, 840, 2410))


@dataclass(frozen=True)
class OnsetSpeech:
    samples: np.ndarray  # mono float32, 16 kHz
    onsets: tuple[int, ...]  # first sample of each burst
    ends: tuple[int, ...]  # one past the last sample of each burst

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _formant(x: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, x)


def voiced_burst(length: int, seed: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    f0 = rng.uniform(110, 140) * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = np.cumsum(f0) / rate
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    vowel = _VOWELS[int(rng.integers(len(_VOWELS)))]
    out = sum(
        _formant(pulses, f, 60 + 0.05 * f, rate) * g
        for f, g in zip(vowel, (1, 0.6, 0.3), strict=True)
    )
    out = np.asarray(out) + 0.02 * rng.standard_normal(length)  # breath
    syllables = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 3.0 * t + np.pi / 2))
    out = out * syllables
    fade = min(length, rate // 100)
    out[-fade:] *= np.linspace(1, 0, fade)
    return (0.5 * out / max(float(np.abs(out).max()), 1e-9)).astype(np.float32)


def onset_speech(
    bursts: int = 12,
    burst_s: float = 0.6,
    gap_s: float = 1.4,
    lead_s: float = 1.5,
    seed: int = 0,
) -> OnsetSpeech:
    """``bursts`` voiced bursts separated by silence (faint noise), sharp onsets."""
    rng = np.random.default_rng(seed)
    rate = SAMPLE_RATE
    period = round((burst_s + gap_s) * rate)
    total = round(lead_s * rate) + bursts * period + rate
    audio = (0.0005 * rng.standard_normal(total)).astype(np.float32)
    onsets, ends = [], []
    start = round(lead_s * rate)
    length = round(burst_s * rate)
    for i in range(bursts):
        # Spread the onsets over the phases of a video frame.
        onset = start + i * period + round((i / bursts) * SAMPLES_PER_FRAME)
        audio[onset : onset + length] += voiced_burst(length, seed * 1000 + i)
        onsets.append(onset)
        ends.append(onset + length)
    return OnsetSpeech(np.clip(audio, -1, 1), tuple(onsets), tuple(ends))
