"""``msadtalker bench face``: how convincing the mesh avatar's face is, read off its pictures.

Every figure comes from landmarks DETECTED AGAIN on rendered frames (the project's own face
landmarker as the instrument, as ``tests/render_checks.py`` does), never from the controls
the renderer was given:

* ``lip_gap_r``: Pearson r, lag 0, of the detected lip gap (over the rest mouth width) with
  the commanded opening, over the bundled English sample rendered with head motion (the
  figure the quality test has bounded since the renderer exists);
  ``lip_gap_r_pose_corrected``: the same with the head angles regressed out of both (the
  landmarker reads a nod as a change of the gap); ``lip_gap_r_still``: the same clip
  rendered with the head held still.
* ``round_width_ratio``: held "ooo" over held "eee" (eSpeak NG phonemes /u:/ and /i:/ in one
  clip with /A:/, "aaa", three times, head still; the first round calibrates the levels):
  median detected mouth width (outer corners) over the frames where the vowel sounds; < 1 =
  narrower on "ooo". ``width_*`` / ``gap_*``: each vowel's width and lip gap over the rest
  mouth width.
* ``chin_per_gap``: least-squares slope of the detected chin's travel down the face against
  the lip gap's change (still head, sample speech): does the jaw drop with the opening?
* ``upper_face_ssim``: mean SSIM (gray, Gaussian window) between rendered frames and the
  source photo outside the lower face (the region the jaw and lips may move: below the
  nose, between the cheeks, down to the frame's bottom), minimum and 5th percentile over
  the still-head speech run (blinks included); ``idle_ssim_min``: the same over a silent
  run with gaze drift and idle micro-motion switched on.
* ``renderer_fps``: frames/s of the renderer alone at ``--size``, one core, speech-like
  controls (``bench render`` is the full speed measurement; this is a quick check).

``--avatar`` measures another photo; ``--frames 0`` skips the speed check.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from msadtalker.avatar import topology as tp
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

DESCRIPTION = "mesh avatar quality on re-detected landmarks: lip gap, vowel shape, chin, SSIM"

# Rigid inner features (eye corners, brows, nose, forehead, cheekbones): head motion is
# undone by a similarity fit on these before the mouth and chin are read.
RIGID = [33, 133, 263, 362, 70, 63, 105, 66, 107, 336, 296, 334, 293, 300]
RIGID += [1, 4, 5, 195, 197, 6, 168, 10, 151, 9, 8, 234, 454, 127, 356]
VOWEL_REPEATS = 3
VOWEL_SPEED = 60  # espeak words per minute: slow, so each vowel is held ~0.5 s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, choices=(256, 512), default=512)
    parser.add_argument(
        "--avatar", type=Path, metavar="IMG", help="portrait (default: the bundled avatar)"
    )
    parser.add_argument(
        "--frames", type=int, default=300, help="frames timed for renderer_fps (0 skips it)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from msadtalker.avatar import default_avatar_path, prepare_avatar
    from msadtalker.avatar.faces import FaceFinder
    from msadtalker.mesh.renderer import MeshRenderer
    from streamer.commands._options import config_from_args

    avatar_path = args.avatar or default_avatar_path()
    avatar = prepare_avatar(avatar_path, args.size)
    renderer = MeshRenderer(avatar, args.size)
    config = config_from_args(args)
    finder = FaceFinder()
    source = renderer.render()
    rest = detect(finder, source)
    sample = sample_speech()

    moving = render_speech(renderer, config, sample, still=False)
    still = render_speech(renderer, config, sample, still=True)
    lm_moving = detect_all(finder, [f.image for f in moving])
    lm_still = detect_all(finder, [f.image for f in still])
    open_moving = np.array([f.motion.mouth_open for f in moving])
    open_still = np.array([f.motion.mouth_open for f in still])
    width = mouth_width(rest)

    pose = np.array([[f.motion.pose.pitch, f.motion.pose.yaw, f.motion.pose.roll] for f in moving])
    result: dict[str, Any] = {
        "lip_gap_r": round(gap_correlation(lm_moving, open_moving, width), 3),
        "lip_gap_r_pose_corrected": round(gap_correlation(lm_moving, open_moving, width, pose), 3),
        "lip_gap_r_still": round(gap_correlation(lm_still, open_still, width), 3),
    }
    vowels = vowel_widths(renderer, config, finder, rest)
    result.update(vowels)
    result["chin_per_gap"] = round(chin_per_gap(lm_still, rest), 3)
    lower = lower_face_mask(rest, source.shape)
    ssim = np.array([masked_ssim(f.image, source, ~lower) for f in still])
    result["upper_face_ssim_min"] = round(float(ssim.min()), 4)
    result["upper_face_ssim_p5"] = round(float(np.percentile(ssim, 5)), 4)
    result["upper_face_ssim_mean"] = round(float(ssim.mean()), 4)
    idle = idle_ssim(renderer, config, source, lower)
    if idle is not None:
        result["idle_ssim_min"] = round(idle, 4)
    if args.frames > 0:
        from streamer.bench.render import single_core, time_renderer

        with single_core(1):
            timings, cpu_s = time_renderer(renderer.render_controls, args.frames)
        result["renderer_fps"] = round(len(timings) / float(np.sum(timings)), 1)
        result["renderer_cpu_fps"] = round(len(timings) / cpu_s, 1)
    result.update(
        {
            "size": args.size,
            "avatar": str(avatar_path),
            "frames_speech": len(still),
            "load_average": _load_average(),
        }
    )
    return result


# --- rendering ----------------------------------------------------------------------------


def render_speech(
    renderer: Any, config: Any, audio: np.ndarray, still: bool, idle: bool = False
) -> list[Any]:
    """``audio`` (16 kHz) through the offline motion stages and the mesh render stage, in
    memory (no video codec between the renderer and the landmarker)."""
    from streamer.assembly import build_motion_stages
    from streamer.pipeline import Pipeline
    from streamer.stages.render import MeshRenderStage
    from streamer.types import AudioChunk

    render = dataclasses.replace(config.render, still=still)
    config = dataclasses.replace(config, render=render)
    if idle:
        config = _with_idle(config)
    stages = [*build_motion_stages(config), MeshRenderStage(renderer)]
    step = SAMPLES_PER_FRAME * 5
    chunks = [AudioChunk(audio[i : i + step], i) for i in range(0, len(audio), step)]
    return list(Pipeline(stages).run(chunks))


def _with_idle(config: Any) -> Any:
    idle = getattr(config, "idle", None)
    if idle is None:
        return None
    on = dataclasses.replace(idle, gaze=True, micro_motion=True)
    return dataclasses.replace(config, idle=on)


def idle_ssim(renderer: Any, config: Any, source: np.ndarray, lower: np.ndarray) -> float | None:
    """Least SSIM outside the lower face over 8 s of silence with the idle motions on (None
    where this version has no idle motions)."""
    if _with_idle(config) is None:
        return None
    silence = np.zeros(8 * SAMPLE_RATE, np.float32)
    frames = render_speech(renderer, config, silence, still=False, idle=True)
    return min(masked_ssim(f.image, source, ~lower) for f in frames)


def sample_speech() -> np.ndarray:
    from msadtalker.audio import load_audio

    path = Path(__file__).resolve().parents[2] / "msadtalker" / "assets" / "sample_speech_en.wav"
    return np.asarray(load_audio(path, warn=False), dtype=np.float32)


def held_vowels(
    phonemes: Sequence[str], repeats: int = VOWEL_REPEATS
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Held vowels (eSpeak NG phoneme input, e.g. ``u:``), one after another with 0.4 s
    silences, the sequence ``repeats`` times: the articulator calibrates its levels on the
    whole clip, as in speech, so a close vowel opens less than an open one. Returns the
    audio and, per phoneme, the video frames where it sounds (within 12 dB of its loudest
    frame), from the second repetition on (the first calibrates)."""
    from streamer.bench.speech import espeak

    pause = np.zeros(round(0.4 * SAMPLE_RATE), np.float32)
    vowels = {p: espeak(f"[[{p}]]", "en", speed=VOWEL_SPEED) for p in phonemes}
    peak = max(float(np.abs(v).max()) for v in vowels.values())
    spans: dict[str, list[tuple[int, int]]] = {p: [] for p in phonemes}
    parts, position = [pause], len(pause)
    for k in range(repeats):
        for p in phonemes:
            v = (vowels[p] * (0.5 / max(peak, 1e-9))).astype(np.float32)
            if k > 0 or repeats == 1:
                spans[p].append((position, position + len(v)))
            parts += [v, pause]
            position += len(v) + len(pause)
    audio = np.concatenate(parts)
    frames = len(audio) // SAMPLES_PER_FRAME
    rms = np.sqrt(np.mean(audio[: frames * SAMPLES_PER_FRAME].reshape(frames, -1) ** 2, axis=1))
    sounding = {}
    for p, ranges in spans.items():
        mask = np.zeros(frames, bool)
        for start, end in ranges:
            a, b = start // SAMPLES_PER_FRAME, min(end // SAMPLES_PER_FRAME, frames)
            loud = rms[a:b] > rms[a:b].max() * 10 ** (-12 / 20)
            mask[a:b] = loud
        sounding[p] = mask
    return audio, sounding


def vowel_widths(renderer: Any, config: Any, finder: Any, rest: np.ndarray) -> dict[str, Any]:
    from streamer.bench.speech import have_espeak

    if not have_espeak():
        return {"round_width_ratio": None, "vowels": "skipped (no espeak-ng)"}
    audio, sounding = held_vowels(["A:", "i:", "u:"])
    frames = render_speech(renderer, config, audio, still=True)
    width, out = mouth_width(rest), {}
    for name, phoneme in (("ooo", "u:"), ("eee", "i:"), ("aaa", "A:")):
        mask = sounding[phoneme][: len(frames)]
        lm = detect_all(finder, [frames[i].image for i in np.flatnonzero(mask)])
        out[f"width_{name}"] = float(np.median([mouth_width(x) for x in lm])) / width
        out[f"gap_{name}"] = float(np.median([tp.lip_gap(x) for x in lm])) / width
    result = {"round_width_ratio": round(out["width_ooo"] / out["width_eee"], 3)}
    result.update({k: round(v, 3) for k, v in out.items()})
    return result


# --- reading the pictures -----------------------------------------------------------------


def detect(finder: Any, image: np.ndarray) -> np.ndarray:
    faces = finder.find(image)
    if not faces:
        raise RuntimeError("bench face: no face detected on a rendered frame")
    largest = max(faces, key=lambda f: f.area)
    return np.asarray(largest.landmarks, dtype=np.float64)


def detect_all(finder: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([detect(finder, image) for image in images])


def mouth_width(landmarks: np.ndarray) -> float:
    a, b = landmarks[tp.MOUTH_CORNERS[0], :2], landmarks[tp.MOUTH_CORNERS[1], :2]
    return float(np.hypot(*(b - a)))


def gap_correlation(
    landmarks: np.ndarray,
    commanded: np.ndarray,
    width: float,
    controls: np.ndarray | None = None,
) -> float:
    """Pearson r of the detected lip gap with the commanded opening; with ``controls``
    (T, k), the partial correlation with them regressed out of both (the landmarker reads a
    head nod as a change of the gap: ~0.005 mouth widths per degree on the bundled avatar,
    though the rendered gap changes by under 5 % over +-10 degrees; the same correction the
    render quality test applies to yaw)."""
    gap = np.array([tp.lip_gap(x) for x in landmarks]) / width
    opening = np.asarray(commanded[: len(gap)], dtype=np.float64)
    if controls is not None:
        design = np.column_stack([controls[: len(gap)], np.ones(len(gap))])
        gap = gap - design @ np.linalg.lstsq(design, gap, rcond=None)[0]
        opening = opening - design @ np.linalg.lstsq(design, opening, rcond=None)[0]
    return float(np.corrcoef(opening, gap)[0, 1])


def aligned(landmarks: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``landmarks`` (468, 3) moved onto ``rest`` by the similarity transform that best
    maps their rigid features (head motion undone)."""
    m, _ = cv2.estimateAffinePartial2D(
        landmarks[RIGID, :2].astype(np.float32), rest[RIGID, :2].astype(np.float32)
    )
    xy = landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    return np.asarray(xy, dtype=np.float64)


def chin_per_gap(landmarks: np.ndarray, rest: np.ndarray) -> float:
    """Slope of the chin's travel down the face (pixels) against the lip gap (pixels)."""
    eye_l, eye_r = tp.eye_centres(rest)
    e = (eye_r - eye_l) / np.hypot(*(eye_r - eye_l))
    down = np.array([-e[1], e[0]])
    chin, gap = [], []
    for lm in landmarks:
        xy = aligned(lm, rest)
        chin.append(float((xy[tp.CHIN] - rest[tp.CHIN, :2]) @ down))
        gap.append(tp.lip_gap(np.column_stack([xy, lm[:, 2]])))
    g = np.array(gap) - tp.lip_gap(rest)
    c = np.array(chin)
    return float(np.polyfit(g, c, 1)[0])


def lower_face_mask(rest: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean (H, W): the region speech may move. Below the nose's base, between the
    face's outline at that height (plus a tenth of the face width), down to the bottom."""
    h, w = shape[:2]
    sil = rest[list(tp.SILHOUETTE), :2]
    top = float(rest[tp.NOSE_BOTTOM, 1])
    face_w = float(sil[:, 0].max() - sil[:, 0].min())
    below = sil[sil[:, 1] >= top - 0.05 * face_w]
    x0 = float(below[:, 0].min()) - 0.1 * face_w
    x1 = float(below[:, 0].max()) + 0.1 * face_w
    y0 = top - 0.05 * face_w
    mask = np.zeros((h, w), bool)
    mask[max(int(y0), 0) :, max(int(x0), 0) : min(int(np.ceil(x1)), w)] = True
    return mask


def masked_ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Mean of the SSIM map (gray, Gaussian window sigma 1.5) over ``where``."""
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(v: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.GaussianBlur(v, (11, 11), 1.5))

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim[where].mean())


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
