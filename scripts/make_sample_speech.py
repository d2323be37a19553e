"""Write the bundled demo speech: msadtalker/assets/sample_speech_{en,cmn}.wav.

Run by hand (needs espeak-ng): ``.venv/bin/python scripts/make_sample_speech.py``.
Each file: 16 kHz mono 16-bit PCM, a few sentences (text written for this project) spoken by
eSpeak NG, joined with natural pauses, peak-normalised to -3 dBFS.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from msadtalker.audio import load_audio
from msadtalker.timing import SAMPLE_RATE

ASSETS = Path(__file__).resolve().parents[1] / "msadtalker" / "assets"

# name -> (voice, words per minute, [(sentence, pause after it in seconds), ...])
SAMPLES: dict[str, tuple[str, int, list[tuple[str, float]]]] = {
    "en": (
        "en",
        160,
        [
            ("Hello, and welcome to this short demonstration.", 0.7),
            ("The avatar listens to my voice and moves its lips in time.", 0.9),
            ("When I stop talking, it rests quietly.", 0.0),
        ],
    ),
    "cmn": (
        "cmn",
        200,
        [
            ("你好，欢迎来看演示。", 0.7),
            ("我说话的时候，它的嘴也会动。", 0.9),
            ("我停下来，它就安静。", 0.0),
        ],
    ),
}
LEAD_S = 0.3
TAIL_S = 0.4
PEAK_DBFS = -3.0


def speak(text: str, voice: str, speed: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "utt.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio = load_audio(wav, warn=False)
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def build(voice: str, sentences: list[tuple[str, float]], speed: int) -> np.ndarray:
    parts = [np.zeros(round(LEAD_S * SAMPLE_RATE), dtype=np.float32)]
    for text, pause in sentences:
        parts.append(speak(text, voice, speed))
        parts.append(np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32))
    parts.append(np.zeros(round(TAIL_S * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(parts).astype(np.float64)
    return np.asarray(audio * (10 ** (PEAK_DBFS / 20) / np.abs(audio).max()))


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ASSETS)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.stderr.write("espeak-ng not found (apt-get install espeak-ng)\n")
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, (voice, speed, sentences) in SAMPLES.items():
        audio = build(voice, sentences, speed)
        path = args.out_dir / f"sample_speech_{name}.wav"
        write_wav(path, audio)
        sys.stdout.write(f"{path}: {len(audio) / SAMPLE_RATE:.2f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
