"""Test speech: eSpeak NG sentences as 16 kHz arrays, known silent gaps, pink noise.

Import as ``from speech import ...`` (pytest puts ``tests/`` on ``sys.path``, as for
``live_fakes``; the directory is deliberately not a package). Clips are cached under
``.cache/tests/speech`` keyed by everything that makes them, so a session pays for espeak once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msadtalker.audio import load_audio
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.bench.speech import pink_noise

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MSADTALKER_TEST_CACHE", REPO / ".cache" / "tests")) / "speech"

ENGLISH = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have a moment.",
    "We were away a year ago, on a long voyage to Norway.",
    "She sells sea shells by the sea shore.",
)
# Mandarin, in characters (espeak-ng cmn reads Hanzi).
MANDARIN = (
    "今天天气很好，我们去公园散步吧。",
    "请你明天早上八点给我打电话。",
    "我们一起学习中文，好不好？",
    "妈妈骑马，马慢，妈妈骂马。",
)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str = "en", speed: int = 150, pitch: int = 50) -> np.ndarray:
    """One utterance from espeak-ng, resampled (soxr HQ) to 16 kHz mono float32."""
    cache = CACHE / f"utt_{_key(text, voice, speed, pitch)}.npy"
    if cache.exists():
        return np.asarray(np.load(cache), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "utt.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio = load_audio(wav, warn=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npy")
    np.save(partial, audio)
    os.replace(partial, cache)  # atomic: parallel test runs never read half a file
    return audio


@dataclass(frozen=True)
class SpeechClip:
    """``audio`` 16 kHz float32; ``gaps`` the inserted silent spans (start_s, end_s)."""

    audio: np.ndarray
    gaps: tuple[tuple[float, float], ...]

    @property
    def frames(self) -> int:
        return len(self.audio) // SAMPLES_PER_FRAME

    def gap_frames(self, settle_s: float = 0.0, margin_s: float = 0.0) -> np.ndarray:
        """Boolean per video frame: inside a gap, ``settle_s`` after its start and
        ``margin_s`` before its end."""
        t = np.arange(self.frames) / (SAMPLE_RATE / SAMPLES_PER_FRAME)
        mask = np.zeros(self.frames, dtype=bool)
        for start, end in self.gaps:
            mask |= (t >= start + settle_s) & (t + 0.04 <= end - margin_s)
        return mask

    def speech_frames(self) -> np.ndarray:
        """Boolean per video frame: outside every gap (espeak's own pauses included)."""
        t = np.arange(self.frames) / (SAMPLE_RATE / SAMPLES_PER_FRAME)
        mask = np.ones(self.frames, dtype=bool)
        for start, end in self.gaps:
            mask &= (t + 0.04 <= start) | (t >= end)
        return mask


def speech_with_gaps(
    sentences: tuple[str, ...] | list[str],
    voice: str = "en",
    gap_s: float = 1.5,
    lead_s: float = 1.0,
    tail_s: float = 1.0,
    level_dbfs: float | None = None,
    speed: int = 150,
    pitch: int = 50,
) -> SpeechClip:
    """Sentences separated by ``gap_s`` of digital silence, with silent lead and tail.

    ``level_dbfs``: scale the whole clip so its speech peak is at this level (None: as
    espeak made it). Gaps include espeak's own leading/trailing silence trimmed away.
    """
    parts: list[np.ndarray] = [np.zeros(round(lead_s * SAMPLE_RATE), dtype=np.float32)]
    gaps: list[tuple[float, float]] = []
    position = len(parts[0])
    gaps.append((0.0, lead_s))
    for k, sentence in enumerate(sentences):
        utt = _trim(espeak(sentence, voice, speed, pitch))
        parts.append(utt)
        position += len(utt)
        pause = gap_s if k + 1 < len(sentences) else tail_s
        parts.append(np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32))
        gaps.append((position / SAMPLE_RATE, (position + len(parts[-1])) / SAMPLE_RATE))
        position += len(parts[-1])
    audio = np.concatenate(parts)
    if level_dbfs is not None:
        audio = audio * np.float32(10 ** (level_dbfs / 20) / max(1e-9, np.abs(audio).max()))
    return SpeechClip(audio=audio.astype(np.float32), gaps=tuple(gaps))


def active_rms(audio: np.ndarray, clip: SpeechClip | None = None) -> float:
    """RMS of the speech: over the non-gap frames when ``clip`` is given, else over frames
    within 40 dB of the loudest frame."""
    frames = frame_rms(audio)
    if clip is not None:
        active = clip.speech_frames()[: len(frames)]
    else:
        active = frames > frames.max() * 10 ** (-40 / 20)
    return float(np.sqrt(np.mean(frames[active] ** 2)))


def add_pink_noise(
    audio: np.ndarray, snr_db: float, seed: int = 0, clip: SpeechClip | None = None
) -> np.ndarray:
    """``audio`` + pink noise whose RMS is ``snr_db`` below the active speech RMS."""
    noise = pink_noise(len(audio), seed) * active_rms(audio, clip) * 10 ** (-snr_db / 20)
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def frame_rms(audio: np.ndarray) -> np.ndarray:
    """RMS of each 640-sample video frame, (T,) float64."""
    frames = len(audio) // SAMPLES_PER_FRAME
    blocks = np.asarray(audio[: frames * SAMPLES_PER_FRAME], dtype=np.float64)
    return np.asarray(np.sqrt(np.mean(blocks.reshape(frames, SAMPLES_PER_FRAME) ** 2, axis=1)))


def _trim(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return audio
    return audio[loud[0] : loud[-1] + 1]


def _key(*parts: object) -> str:
    blob = json.dumps([str(p) for p in parts], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
