"""``msadtalker bench motion``: the figures of the motion design (issue 3's closing note).

Speech: eSpeak NG sentences in English (``en``) and Mandarin (``cmn``) with digital silence
inserted at known places (``streamer.bench.speech``), clean and with pink noise at
``--snr-db`` (default 10 dB). Each runs through the real motion stages
(``build_motion_stages``, the config given on the command line) and is scored per video frame
against the inserted gaps:

* ``head_speed_ratio``: mean head angular speed (|d(pitch, yaw, roll)/dt|, deg/s) over the gap
  frames / over the speech frames; ``head_speed_ratio_settled`` the same over the settled gap
  frames: at least ``--settle-s`` after the gap's start (the ease back to rest excluded) and
  ``SETTLED_MARGIN_S`` before its end (the weight rises L = 2 frames ahead of speech by design,
  and the mel window of the last gap frame already hears the onset: the lips part just before
  the sound, as people's do).
* ``pose_max_over_A``: max |P| / A per axis of the rendered pose (1 = the clamp).
* ``pose_rms_jerk_deg_s3``: RMS jerk of the rendered pose (norm over the axes), which
  includes the starts and stops of the head at every pause.
* ``silent``: precision / recall / F1 of the raw detection (``silent``) as "silence" against
  the gap frames; ``weight``: the same for "w~ < 0.5" (what moves the head).
* ``silent_offline``: the same for the paper's offline weighter (whole-clip min-max) on the
  same lip signal, and ``causal_agrees_with_offline`` the share of frames where the streaming
  detection (running normalisation) and the offline one agree.
* ``mouth_max_in_settled_gaps``: the largest rendered mouth opening in the settled gap frames.

Pose generator (no audio): ``--generator-s`` seconds of the raw cosine pose with the default
low-passed noise and with the paper's i.i.d. noise (same sigma, same seed): max |P| / A per
axis, the share of frames at the clamp, RMS jerk (third difference x fps^3, deg/s^3) per
axis of the pose and of the noise term alone (the pose minus the same seed's noise-free
pose), and the i.i.d. / low-passed ratios.

``--long-s S`` (optional): writes S seconds of speech (the English clip repeated) as a WAV and
runs ``msadtalker motion`` on it in a child process; reports its peak RSS next to that of a
short run (bounded memory: the file is streamed) and its speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from msadtalker.pose import AXES, CosinePoseConfig, CosinePoseGenerator
from msadtalker.silence import silence_weights_offline
from msadtalker.timing import FPS, SAMPLE_RATE
from streamer.bench.speech import GappedSpeech, gapped_speech, with_pink_noise
from streamer.config import Config
from streamer.pipeline import Pipeline
from streamer.types import AudioChunk, MotionFrame

log = logging.getLogger(__name__)

DESCRIPTION = "motion figures: head speed in silence, pose range, noise jerk, silence P/R"

# Text written for this project. Gaps between sentences, in seconds, cycle through GAPS_S.
SENTENCES = {
    "en": (
        "Good morning, and thank you for joining us today.",
        "The weather is clear, with a light wind from the west.",
        "Please keep your tickets ready at the gate.",
        "We will start the tour in about ten minutes.",
        "Lunch is served on the second floor, next to the library.",
        "If you have any questions, just ask one of our guides.",
    ),
    "cmn": (
        "早上好，谢谢大家今天来参加。",
        "今天天气晴朗，西边有一点小风。",
        "请在门口准备好您的票。",
        "我们大约十分钟以后开始参观。",
        "午饭在二楼，就在图书馆旁边。",
        "如果有问题，请问我们的导游。",
    ),
}
GAPS_S = (0.5, 1.2, 2.5, 0.3, 3.0)
SETTLED_MARGIN_S = 0.12
CHUNK_SAMPLES = 320  # 20 ms, as a live mic delivers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--languages", default="en,cmn", help="espeak-ng voices (default en,cmn)")
    parser.add_argument(
        "--sentences",
        type=int,
        default=len(SENTENCES["en"]),
        help="sentences per language (default all 6)",
    )
    parser.add_argument(
        "--snr-db",
        type=float,
        default=10.0,
        help="pink-noise SNR of the noisy condition (default 10 dB)",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=0.5,
        help="time into a gap after which the avatar must be at rest",
    )
    parser.add_argument(
        "--generator-s",
        type=float,
        default=600.0,
        help="seconds of raw pose for the range and jerk figures",
    )
    parser.add_argument(
        "--long-s",
        type=float,
        default=0.0,
        help="also measure peak memory of `msadtalker motion` on a file this "
        "long (seconds; 0 = skip)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.commands._options import config_from_args

    config = config_from_args(args)
    languages = [lang.strip() for lang in str(args.languages).split(",") if lang.strip()]
    return bench_motion(
        config,
        languages=languages,
        sentences=max(1, int(args.sentences)),
        snr_db=float(args.snr_db),
        settle_s=float(args.settle_s),
        generator_s=float(args.generator_s),
        long_s=float(args.long_s),
    )


def bench_motion(
    config: Config,
    languages: list[str],
    sentences: int = 6,
    snr_db: float = 10.0,
    settle_s: float = 0.5,
    generator_s: float = 600.0,
    long_s: float = 0.0,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "config": {
            "lookahead_ms": config.pipeline.lookahead_ms,
            "seed": config.pipeline.seed,
            "pose_noise": config.pose.noise,
            "pose_easing": config.silence.pose_easing,
            "pose_ease_s": config.silence.pose_ease_s,
            "silence_source": config.silence.source,
        },
    }
    clips: dict[str, GappedSpeech] = {}
    for lang in languages:
        texts = SENTENCES.get(lang, SENTENCES["en"])
        clip = gapped_speech(
            [texts[i % len(texts)] for i in range(sentences)], lang, GAPS_S, seed=len(clips)
        )
        clips[lang] = clip
        noisy = with_pink_noise(clip, snr_db, seed=config.pipeline.seed + 1)
        result[lang] = {
            "speech": clip.source,
            "seconds": round(len(clip.audio) / SAMPLE_RATE, 2),
            "gaps_s": [round((e - s) / SAMPLE_RATE, 2) for s, e in clip.gaps],
            "clean": score_clip(config, clip, clip.audio, settle_s),
            f"pink_{snr_db:g}db": score_clip(config, clip, noisy, settle_s),
        }
    result["pose_generator"] = generator_figures(config.pose, config.pipeline.seed, generator_s)
    if long_s > 0 and clips:
        result["long_file"] = long_file_memory(next(iter(clips.values())), long_s)
    return result


# ---------------------------------------------------------------------------- clips


def motion_frames(config: Config, audio: np.ndarray) -> list[MotionFrame]:
    from streamer.assembly import build_motion_stages

    pipeline: Pipeline[MotionFrame] = Pipeline(build_motion_stages(config))
    chunks = (
        AudioChunk(samples=audio[i : i + CHUNK_SAMPLES], start=i)
        for i in range(0, len(audio), CHUNK_SAMPLES)
    )
    return list(pipeline.run(chunks))


def score_clip(
    config: Config, clip: GappedSpeech, audio: np.ndarray, settle_s: float
) -> dict[str, Any]:
    frames = motion_frames(config, audio)
    n = min(len(frames), clip.frames)
    pose = np.array([[f.pose.pitch, f.pose.yaw, f.pose.roll] for f in frames[:n]])
    silent = np.array([f.silence.silent for f in frames[:n]], dtype=bool)
    weight = np.array([f.silence.weight for f in frames[:n]])
    mouth = np.array([f.mouth_open for f in frames[:n]])
    upper = np.array([f.lips.upper_lip for f in frames[:n]])
    lower = np.array([f.lips.lower_lip for f in frames[:n]])
    offline_silent, _ = silence_weights_offline(upper, lower, config.silence)
    gap = clip.gap_frames()[:n]
    settled = clip.gap_frames(settle_s, SETTLED_MARGIN_S)[:n]
    speech = clip.speech_frames()[:n]
    speed = head_speed(pose)
    speech_speed = _mean(speed[speech])
    amplitude = np.array(config.pose.amplitude_deg)
    return {
        "frames": n,
        "gap_frames": int(gap.sum()),
        "head_speed_deg_s": {
            "speech": round(speech_speed, 3),
            "gap": round(_mean(speed[gap]), 3),
            "gap_settled": round(_mean(speed[settled]), 4),
        },
        "head_speed_ratio": _ratio(_mean(speed[gap]), speech_speed),
        "head_speed_ratio_settled": _ratio(_mean(speed[settled]), speech_speed),
        "pose_max_over_A": per_axis(np.abs(pose).max(axis=0) / np.maximum(amplitude, 1e-12)),
        "pose_rms_jerk_deg_s3": round(float(np.linalg.norm(rms_jerk(pose))), 1),
        "silent": precision_recall(silent, gap),
        "weight": precision_recall(weight < 0.5, gap),
        "silent_offline": precision_recall(offline_silent, gap),
        "causal_agrees_with_offline": round(float(np.mean(offline_silent == silent)), 4),
        "mouth_max_in_settled_gaps": round(float(mouth[settled].max()), 4) if settled.any() else 0,
    }


def head_speed(pose: np.ndarray) -> np.ndarray:
    """Per frame, the angular speed in deg/s (frame 0: 0), norm over the three axes."""
    speed = np.zeros(len(pose))
    if len(pose) > 1:
        speed[1:] = np.linalg.norm(np.diff(pose, axis=0), axis=1) * FPS
    return speed


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Of ``predicted`` as silence against the true silence ``truth``."""
    hits = float(np.sum(predicted & truth))
    precision = hits / max(float(predicted.sum()), 1.0)
    recall = hits / max(float(truth.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


# ---------------------------------------------------------------------------- generator


def rms_jerk(pose: np.ndarray) -> np.ndarray:
    """Per axis, RMS of the third difference times fps^3 (deg/s^3)."""
    return np.asarray(np.sqrt(np.mean((np.diff(pose, n=3, axis=0) * FPS**3) ** 2, axis=0)))


def generator_figures(pose: CosinePoseConfig, seed: int, seconds: float) -> dict[str, Any]:
    frames = max(8, round(seconds * FPS))
    amplitude = np.maximum(np.array(pose.amplitude_deg), 1e-12)
    # The noise has its own random stream (msadtalker.pose), so the noise-free pose of the
    # same seed is the same cosine: the difference is the noise term (clamped where P is).
    clean = CosinePoseGenerator(dataclasses.replace(pose, noise_sigma_frac=0.0), seed).generate(
        frames
    )
    out: dict[str, Any] = {"seconds": round(frames / FPS, 2)}
    jerk: dict[str, np.ndarray] = {}
    noise_jerk: dict[str, np.ndarray] = {}
    for noise in ("lowpass", "iid"):
        raw = CosinePoseGenerator(dataclasses.replace(pose, noise=noise), seed=seed).generate(
            frames
        )
        jerk[noise] = rms_jerk(raw)
        noise_jerk[noise] = rms_jerk(raw - clean)
        out[noise] = {
            "max_over_A": per_axis(np.abs(raw).max(axis=0) / amplitude),
            "clamped_share": per_axis(np.mean(np.abs(raw) >= amplitude - 1e-9, axis=0)),
            "rms_jerk_deg_s3": per_axis(jerk[noise], digits=1),
            "noise_rms_jerk_deg_s3": per_axis(noise_jerk[noise], digits=1),
        }
    out["noise_free_rms_jerk_deg_s3"] = per_axis(rms_jerk(clean), digits=1)
    out["jerk_ratio_iid_over_lowpass"] = per_axis(jerk["iid"] / np.maximum(jerk["lowpass"], 1e-12))
    out["noise_jerk_ratio_iid_over_lowpass"] = per_axis(
        noise_jerk["iid"] / np.maximum(noise_jerk["lowpass"], 1e-12)
    )
    return out


# ---------------------------------------------------------------------------- long file


def long_file_memory(clip: GappedSpeech, seconds: float) -> dict[str, Any]:
    """Peak RSS of ``msadtalker motion`` on a ``seconds`` long WAV vs on a 20 s one."""
    with tempfile.TemporaryDirectory() as tmp:
        short = _tiled_wav(Path(tmp) / "short.wav", clip.audio, 20.0)
        long = _tiled_wav(Path(tmp) / "long.wav", clip.audio, seconds)
        short_rss, _ = _child_peak_rss(short, Path(tmp) / "short.csv")
        long_rss, wall = _child_peak_rss(long, Path(tmp) / "long.csv")
        rows = sum(1 for _ in (Path(tmp) / "long.csv").open(encoding="utf-8")) - 1
    return {
        "seconds": round(seconds, 1),
        "frames": rows,
        "peak_rss_mb": round(long_rss, 1),
        "peak_rss_mb_20s_file": round(short_rss, 1),
        "wall_s": round(wall, 2),
        "realtime_factor": round(seconds / max(wall, 1e-9), 1),
    }


def _tiled_wav(path: Path, audio: np.ndarray, seconds: float) -> Path:
    """Write ``audio`` repeated to ``seconds`` as 16-bit PCM, block by block."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    total = round(seconds * SAMPLE_RATE) * 2
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        written = 0
        while written < total:
            block = pcm[: total - written]
            out.writeframes(block)
            written += len(block)
    return path


def _child_peak_rss(audio: Path, trace: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one ``msadtalker motion`` child process."""
    code = (
        "import resource, sys\n"
        "from streamer.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "motion", "--audio", str(audio), "--trace", str(trace)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"msadtalker motion failed on {audio} (exit {done.returncode}): {last}")
    kib = int(done.stdout.strip().splitlines()[-1])
    return kib / 1024.0, wall


# ---------------------------------------------------------------------------- helpers


def per_axis(values: np.ndarray, digits: int = 4) -> dict[str, float]:
    return {axis: round(float(v), digits) for axis, v in zip(AXES, values, strict=True)}


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b > 0 else float("nan")
