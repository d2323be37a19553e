"""Test speech with silent gaps at known places, for the motion bench.

Sentences spoken by eSpeak NG (any voice it has: ``en``, ``cmn``, ...), peak-normalised and
joined with stretches of digital silence whose sample spans are recorded: the ground truth of
"silence" is exactly those spans; everything else (espeak's own short pauses between words
included) counts as speech. Without espeak-ng, synthetic voiced bursts
(``streamer.bench.signals.voiced_burst``) stand in for the sentences, and ``source`` says so.
Pink noise can be mixed in at a given SNR (speech power over the speech frames).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msadtalker.audio import load_audio
from msadtalker.errors import ConfigError
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.bench.signals import voiced_burst

_TRIM_LEVEL = 1e-3  # espeak's leading/trailing near-silence is trimmed below this


@dataclass(frozen=True)
class GappedSpeech:
    """``audio``: 16 kHz mono float32; ``gaps``: inserted silences as [start, end) samples."""

    audio: np.ndarray
    gaps: tuple[tuple[int, int], ...]
    source: str

    @property
    def frames(self) -> int:
        return len(self.audio) // SAMPLES_PER_FRAME

    def gap_frames(self, settle_s: float = 0.0, margin_s: float = 0.0) -> np.ndarray:
        """Per video frame: its 640 samples lie inside a gap, at least ``settle_s`` after the
        gap's start and ``margin_s`` before its end."""
        starts = np.arange(self.frames) * SAMPLES_PER_FRAME
        mask = np.zeros(self.frames, dtype=bool)
        for start, end in self.gaps:
            first = start + round(settle_s * SAMPLE_RATE)
            last = end - round(margin_s * SAMPLE_RATE)
            mask |= (starts >= first) & (starts + SAMPLES_PER_FRAME <= last)
        return mask

    def speech_frames(self) -> np.ndarray:
        """Per video frame: it overlaps no gap."""
        starts = np.arange(self.frames) * SAMPLES_PER_FRAME
        mask = np.ones(self.frames, dtype=bool)
        for start, end in self.gaps:
            mask &= (starts + SAMPLES_PER_FRAME <= start) | (starts >= end)
        return mask


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str, speed: int = 150) -> np.ndarray:
    """One utterance, 16 kHz mono float32, leading/trailing silence trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "utt.wav"
        done = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not wav.exists():
            problem = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"espeak-ng cannot speak with voice {voice!r}: {problem}")
        audio = load_audio(wav, warn=False)
    loud = np.flatnonzero(np.abs(audio) > _TRIM_LEVEL)
    return audio if len(loud) == 0 else audio[loud[0] : loud[-1] + 1]


def gapped_speech(
    sentences: Sequence[str],
    voice: str,
    gaps_s: Sequence[float],
    lead_s: float = 1.0,
    tail_s: float = 1.0,
    peak_dbfs: float = -3.0,
    seed: int = 0,
) -> GappedSpeech:
    """``sentences`` separated by ``gaps_s`` (one fewer than the sentences; reused cyclically
    when short), with a silent lead and tail, all of them recorded as gaps."""
    use_espeak = have_espeak()
    utterances = [
        espeak(text, voice) if use_espeak else voiced_burst(round(1.8 * SAMPLE_RATE), seed + i)
        for i, text in enumerate(sentences)
    ]
    peak = max(float(np.abs(u).max()) for u in utterances)
    gain = 10 ** (peak_dbfs / 20) / max(peak, 1e-9)
    pauses = [lead_s]
    pauses += [gaps_s[i % len(gaps_s)] for i in range(len(utterances) - 1)] if gaps_s else []
    pauses.append(tail_s)
    parts: list[np.ndarray] = []
    gaps: list[tuple[int, int]] = []
    position = 0
    for k, pause in enumerate(pauses):
        silence = np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32)
        if len(silence):
            parts.append(silence)
            gaps.append((position, position + len(silence)))
            position += len(silence)
        if k < len(utterances):
            parts.append((utterances[k] * gain).astype(np.float32))
            position += len(utterances[k])
    source = f"espeak-ng {voice}" if use_espeak else "synthetic voiced bursts (no espeak-ng)"
    return GappedSpeech(np.concatenate(parts), tuple(gaps), source)


def pink_noise(n: int, seed: int = 0) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise, 20 Hz .. 8 kHz, float64."""
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    shaping = np.zeros_like(freqs)
    audible = freqs >= 20.0
    shaping[audible] = 1.0 / np.sqrt(freqs[audible])
    noise = np.fft.irfft(spectrum * shaping, n=n)
    return np.asarray(noise / np.sqrt(np.mean(noise**2)))


def with_pink_noise(speech: GappedSpeech, snr_db: float, seed: int = 0) -> np.ndarray:
    """The audio plus pink noise ``snr_db`` below the speech power of the speech frames."""
    frames = speech.frames
    blocks = speech.audio[: frames * SAMPLES_PER_FRAME].astype(np.float64)
    blocks = blocks.reshape(frames, SAMPLES_PER_FRAME)
    power = float(np.mean(blocks[speech.speech_frames()] ** 2))
    noise = pink_noise(len(speech.audio), seed) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(speech.audio + noise, -1.0, 1.0).astype(np.float32)
