"""``msadtalker bench vad``: which silence signal (``silence.source``) works best on noisy
speech: the lip derivative (the paper), WebRTC's VAD, or both.

Speech: espeak-ng sentences (several voices) separated by pauses of 0.6-1.6 s, when espeak-ng
is installed; otherwise the synthetic voiced bursts of ``streamer.bench.signals``. Ground truth
per video frame from the clean signal: speech where its level is within 35 dB of the loudest
frame, with gaps shorter than 160 ms closed (pauses between words are speech; pauses between
phrases are silence). Noise: white, pink and brown, mixed at each SNR (measured over the
speech frames). Each source runs the real motion stages; per frame the raw ``silent``
decision is scored against the truth (balanced accuracy = mean of speech recall and silence
recall) and so is what the avatar shows: the share of true silence with a smoothed weight
above 0.5 (moving in silence) and of true speech with a weight below 0.5 (frozen while
speaking).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.signal import lfilter

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.bench.signals import onset_speech
from streamer.config import Config
from streamer.ingest import StreamResampler
from streamer.pipeline import Pipeline
from streamer.stages.contract import Stage
from streamer.types import AudioChunk

log = logging.getLogger(__name__)

DESCRIPTION = "silence detection on noisy speech: silence.source = lips | vad | both"
Source = Literal["lips", "vad", "both"]
SOURCES: tuple[Source, ...] = ("lips", "vad", "both")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her.",
    "Wednesday at the train station would be perfect for everyone.",
)
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-us+m3", "en-us+f2")
StageBuilder = Callable[[Config], Sequence[Stage[Any, Any]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snrs", default="clean,20,10,5,0", help="SNRs in dB (or 'clean')")
    parser.add_argument("--noises", default="white,pink,brown")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.assembly import build_motion_stages
    from streamer.commands._options import config_from_args

    config = config_from_args(args)
    snrs = [None if s.strip() == "clean" else float(s) for s in str(args.snrs).split(",")]
    noises = [n.strip() for n in str(args.noises).split(",") if n.strip()]
    return bench_vad(config, build_motion_stages, snrs, noises, seed=getattr(args, "seed", 0) or 0)


def bench_vad(
    config: Config,
    build: StageBuilder,
    snrs: Sequence[float | None],
    noises: Sequence[str],
    seed: int = 0,
) -> dict[str, Any]:
    speech, corpus = test_speech(seed)
    truth = speech_truth(speech)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for noise_kind in noises:
        for snr in snrs:
            if snr is None and noise_kind != noises[0]:
                continue  # "clean" once
            audio = (
                speech
                if snr is None
                else mix(speech, noise(noise_kind, len(speech), rng), snr, truth)
            )
            for source in SOURCES:
                cfg = dataclasses.replace(
                    config, silence=dataclasses.replace(config.silence, source=source)
                )
                silent, weight = _run(build(cfg), audio)
                n = min(len(silent), len(truth))
                silent, weight = silent[:n], weight[:n]
                rows.append(
                    {
                        "noise": "none" if snr is None else noise_kind,
                        "snr_db": snr,
                        "source": source,
                        **score(truth[:n], silent, weight),
                    }
                )
    summary = {
        source: round(
            float(
                np.mean(
                    [
                        r["balanced_accuracy"]
                        for r in rows
                        if r["source"] == source and r["snr_db"] is not None and r["snr_db"] <= 10
                    ]
                )
            ),
            4,
        )
        for source in SOURCES
    }
    best = max(summary, key=lambda k: summary[k])
    by_condition: dict[str, dict[str, dict[str, float]]] = {}
    for metric in ("balanced_accuracy", "moving_in_silence", "frozen_in_speech"):
        table_: dict[str, dict[str, float]] = {}
        for r in rows:
            cond = "clean" if r["snr_db"] is None else f"{r['noise']}_{r['snr_db']:.0f}dB"
            table_.setdefault(cond, {})[r["source"]] = r[metric]
        by_condition[metric] = table_
    return {
        "corpus": corpus,
        "frames": int(len(truth)),
        "speech_share": round(float(truth.mean()), 3),
        "balanced_accuracy_at_snr_le_10db": summary,
        "best_on_noisy_speech": best,
        **by_condition,
    }


def _run(stages: Sequence[Stage[Any, Any]], audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pipeline: Pipeline[Any] = Pipeline(list(stages))
    chunks = (AudioChunk(audio[i : i + 4000], i) for i in range(0, len(audio), 4000))
    frames = list(pipeline.run(chunks))
    silent = np.array([f.silence.silent for f in frames], dtype=bool)
    weight = np.array([f.silence.weight for f in frames], dtype=np.float64)
    return silent, weight


def score(truth: np.ndarray, silent: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    speech = truth
    quiet = ~truth
    speech_recall = float((~silent[speech]).mean()) if speech.any() else float("nan")
    silence_recall = float(silent[quiet].mean()) if quiet.any() else float("nan")
    return {
        "balanced_accuracy": round((speech_recall + silence_recall) / 2, 4),
        "speech_recall": round(speech_recall, 4),
        "silence_recall": round(silence_recall, 4),
        "moving_in_silence": round(float((weight[quiet] > 0.5).mean()), 4),
        "frozen_in_speech": round(float((weight[speech] < 0.5).mean()), 4),
    }


def test_speech(seed: int = 0) -> tuple[np.ndarray, str]:
    """Clean 16 kHz speech with pauses, and what it is made of."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return onset_speech(bursts=12, seed=seed).samples, "synthetic voiced bursts"
    rng = np.random.default_rng(seed)
    parts = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            voice = VOICES[i % len(VOICES)]
            subprocess.run(
                [espeak, "-v", voice, "-w", str(wav), text], check=True, capture_output=True
            )
            parts.append(_read_wav(wav))
            parts.append(np.zeros(int(rng.uniform(0.6, 1.6) * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(parts)
    audio = 0.5 * audio / max(float(np.abs(audio).max()), 1e-9)
    return audio.astype(np.float32), f"espeak-ng, {len(SENTENCES)} sentences"


def _read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return StreamResampler(int(rate), SAMPLE_RATE).process(data.mean(axis=1))


def speech_truth(clean: np.ndarray, floor_db: float = -35.0, close_s: float = 0.16) -> np.ndarray:
    frames = len(clean) // SAMPLES_PER_FRAME
    x = clean[: frames * SAMPLES_PER_FRAME].reshape(frames, SAMPLES_PER_FRAME)
    level = 10 * np.log10(np.mean(x.astype(np.float64) ** 2, axis=1) + 1e-12)
    speech = level > level.max() + floor_db
    gap = int(round(close_s * SAMPLE_RATE / SAMPLES_PER_FRAME))
    i = 0
    while i < frames:  # close short gaps
        if not speech[i]:
            j = i
            while j < frames and not speech[j]:
                j += 1
            if 0 < i and j < frames and j - i <= gap:
                speech[i:j] = True
            i = j
        else:
            i += 1
    return speech


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        out = white
    elif kind == "pink":  # Paul Kellet's economy filter, ~-3 dB/octave
        out = lfilter(
            [0.049922035, -0.095993537, 0.050612699, -0.004408786],
            [1, -2.494956002, 2.017265875, -0.522189400],
            white,
        )
    elif kind == "brown":
        out = lfilter([1.0], [1.0, -0.995], white)
    else:
        raise ValueError(f"unknown noise {kind!r} (white, pink, brown)")
    return (out / np.std(out)).astype(np.float32)


def mix(speech: np.ndarray, noise_: np.ndarray, snr_db: float, truth: np.ndarray) -> np.ndarray:
    frames = len(truth) * SAMPLES_PER_FRAME
    active = np.repeat(truth, SAMPLES_PER_FRAME)
    p_speech = float(np.mean(speech[:frames][active] ** 2))
    p_noise = float(np.mean(noise_**2))
    gain = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return np.clip(speech + gain * noise_, -1.0, 1.0).astype(np.float32)


def table(result: dict[str, Any]) -> str:
    """The figures as a text table: one row per condition, one column group per source."""
    head = f"{'condition':12}" + "".join(f" {src + ' acc/mov/frz':>21}" for src in SOURCES)
    lines = [head]
    for cond, accs in result["balanced_accuracy"].items():
        cells = []
        for src in SOURCES:
            mov = result["moving_in_silence"][cond][src]
            frz = result["frozen_in_speech"][cond][src]
            cells.append(f" {accs[src]:7.3f}/{mov:6.3f}/{frz:6.3f}")
        lines.append(f"{cond:12}" + "".join(cells))
    return "\n".join(lines)
