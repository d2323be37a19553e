"""Which of the 15 unsupervised keypoints are the lips, and the lip signal read from them.

The keypoints have no names, so the lips are found from the networks themselves, once per
checkpoint (and mapping variant), by :func:`calibrate_lip_keypoints`:

1. Mouth-opening direction of the expression: ExpNet on the loudest quarter of the frames of
   the bundled sample speech (English and Mandarin, the frame's own mel columns ranked by
   level) minus ExpNet on a digitally silent window. ExpNet's last layer is linear in its
   reference-expression and blink inputs, so this difference does not depend on them (both
   are zero here): it is a property of the checkpoint alone.
2. Keypoint response: the mapping network on a neutral window (zero expression, frontal
   pose, zero translation; for the 73-d net the alignment of the standard face at the render
   size) and on the same window with the opening direction added to the expression. The
   difference of the ``exp`` head, reshaped (15, 3), is how far each keypoint moves,
   non-rigidly, when the mouth opens.
3. The two keypoints that move most are the lips; the one that moves further down the image
   (larger y change: keypoint y grows downward) is the lower lip, the other the upper lip.
   Each lip's signal is its position projected on its own (unit) response direction, so both
   grow as the mouth opens, and their response lengths are the lips' nominal speech ranges
   (``nominal_range`` = the lower lip's, used to floor the silence weighter's running range).

Reading (:class:`LipReader`, per avatar): the keypoints of a frame are the source's rigid
keypoints (the head held at the source pose, see ``source.kp_rigid``) plus the ``exp`` head of
the mapping run on the frame's lip window (rows with the source pose, see ``motion``): head
motion, which the silence weight is about to gate, can therefore not leak into the signal
that computes that weight. ``mouth_open`` = (opening - the avatar's closed opening) / the
nominal opening range, clipped to [0, 1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from msadtalker.audio import load_audio, log_mel, mel_windows
from msadtalker.models.face_recon import RESCALE, fallback_five_points, fit_camera
from msadtalker.neural.coeffs import EXP, source_window
from msadtalker.neural.runner import NetworkRunner

log = logging.getLogger(__name__)

SAMPLE_SPEECH = ("sample_speech_en.wav", "sample_speech_cmn.wav")
LOUD_FRACTION = 0.25
SILENT_MEL = -4.0  # the normalised log-mel of digital silence (the clip floor)
# Window columns holding the frame's own audio (the window layout: msadtalker.audio.mel).
OWN_COLUMNS = slice(6, 10)
NUM_KP = 15


@dataclass(frozen=True)
class LipKeypoints:
    """The chosen lip keypoints of one checkpoint and mapping variant (see module doc)."""

    upper: int
    lower: int
    upper_direction: np.ndarray  # (3,) unit
    lower_direction: np.ndarray  # (3,) unit
    upper_response: float  # keypoint units moved by a loud-vs-silent opening
    lower_response: float
    response: np.ndarray  # (15, 3) every keypoint's displacement, for the record
    exp_direction: np.ndarray  # (64,) mouth-opening direction of the expression

    @property
    def nominal_range(self) -> float:
        return self.lower_response

    @property
    def opening_range(self) -> float:
        return self.upper_response + self.lower_response

    def signals(self, keypoints: np.ndarray) -> tuple[float, float]:
        """(upper, lower) lip positions of (15, 3) keypoints."""
        kp = np.asarray(keypoints, dtype=np.float64)
        return (
            float(kp[self.upper] @ self.upper_direction),
            float(kp[self.lower] @ self.lower_direction),
        )


def sample_speech_windows() -> np.ndarray:
    """(N, 80, 16) mel windows of the bundled sample speech (all languages)."""
    windows = []
    assets = resources.files("msadtalker").joinpath("assets")
    for name in SAMPLE_SPEECH:
        with resources.as_file(assets.joinpath(name)) as path:
            wav = load_audio(Path(path), warn=False)
        frames = len(wav) // 640
        windows.append(mel_windows(log_mel(wav), frames))
    return np.concatenate(windows)


def loud_windows(windows: np.ndarray, fraction: float = LOUD_FRACTION) -> np.ndarray:
    """The ``fraction`` of windows whose own columns are loudest."""
    level = windows[:, :, OWN_COLUMNS].mean(axis=(1, 2))
    count = max(1, int(round(fraction * len(windows))))
    order = np.argsort(-level, kind="stable")
    return windows[np.sort(order[:count])]


def silent_window() -> np.ndarray:
    return np.full((80, 16), SILENT_MEL, dtype=np.float32)


def expnet(
    run: NetworkRunner, mels: np.ndarray, ref_exp: np.ndarray, blink: float = 0.0
) -> np.ndarray:
    """ExpNet on (N, 80, 16) windows with one reference expression -> (N, 64)."""
    mels = np.asarray(mels, dtype=np.float32).reshape(-1, 1, 80, 16)
    count = len(mels)
    ref = np.repeat(np.asarray(ref_exp, dtype=np.float32).reshape(1, 64), count, axis=0)
    ratio = np.full((count, 1), blink, dtype=np.float32)
    out: np.ndarray = np.asarray(run("audio2exp", mels, ref, ratio)["exp"], dtype=np.float32)
    return out


def neutral_row(coeff_nc: int, size: int) -> np.ndarray:
    """Zero expression, frontal pose, zero translation (+ the standard face's alignment)."""
    row = np.zeros(coeff_nc, dtype=np.float32)
    if coeff_nc == 73:
        fitted, tx, ty = fit_camera(fallback_five_points(size, size))
        row[70:73] = (RESCALE / fitted, tx, ty)
    return row


def calibrate_lip_keypoints(
    run: NetworkRunner,
    mapping_network: str,
    coeff_nc: int,
    size: int,
    windows: np.ndarray | None = None,
) -> LipKeypoints:
    """Choose the lip keypoints of a checkpoint (see the module docstring)."""
    windows = sample_speech_windows() if windows is None else windows
    zero = np.zeros(64, dtype=np.float32)
    loud = expnet(run, loud_windows(windows), zero).mean(axis=0)
    quiet = expnet(run, silent_window()[None], zero)[0]
    direction = (loud - quiet).astype(np.float32)

    base = neutral_row(coeff_nc, size)
    opened = base.copy()
    opened[EXP] += direction
    rest = np.asarray(run(mapping_network, source_window(base))["exp"], dtype=np.float64)
    moved = np.asarray(run(mapping_network, source_window(opened))["exp"], dtype=np.float64)
    response = (moved - rest).reshape(NUM_KP, 3)
    upper, lower = choose_lips(response)
    if np.linalg.norm(response[lower]) <= 0:
        log.warning(
            "%s: no keypoint responds to the mouth opening; the lip signal will be flat",
            mapping_network,
        )
    lips = lip_keypoints_from_response(response, upper, lower, direction)
    log.info(
        "%s lip keypoints: upper %d (moves %.4f), lower %d (moves %.4f) of 15",
        mapping_network,
        upper,
        lips.upper_response,
        lower,
        lips.lower_response,
    )
    return lips


def choose_lips(response: np.ndarray) -> tuple[int, int]:
    """(upper, lower): the two keypoints that move most; the lower one moves further down."""
    response = np.asarray(response, dtype=np.float64).reshape(NUM_KP, 3)
    lengths = np.linalg.norm(response, axis=1)
    first, second = (int(k) for k in np.argsort(-lengths, kind="stable")[:2])
    if response[first, 1] >= response[second, 1]:
        return second, first
    return first, second


def lip_keypoints_from_response(
    response: np.ndarray, upper: int, lower: int, exp_direction: np.ndarray
) -> LipKeypoints:
    response = np.asarray(response, dtype=np.float64).reshape(NUM_KP, 3)
    lengths = np.linalg.norm(response, axis=1)

    def unit(k: int) -> np.ndarray:
        # A keypoint that does not move reads its (downward) y coordinate.
        return response[k] / lengths[k] if lengths[k] > 0 else np.array([0.0, 1.0, 0.0])

    return LipKeypoints(
        upper=upper,
        lower=lower,
        upper_direction=unit(upper),
        lower_direction=unit(lower),
        upper_response=float(lengths[upper]),
        lower_response=float(lengths[lower]),
        response=response.astype(np.float32),
        exp_direction=np.asarray(exp_direction, dtype=np.float32),
    )


@dataclass(frozen=True)
class LipSignal:
    upper: float
    lower: float
    mouth_open: float


@dataclass(frozen=True)
class LipReader:
    """Per-avatar reading of the lip signal from a mapping ``exp`` head output (45,)."""

    lips: LipKeypoints
    kp_rigid: np.ndarray  # (15, 3) the source's keypoints without expression offsets
    closed_opening: float  # upper + lower of the avatar at rest (silent audio)

    def keypoints(self, exp_offsets: np.ndarray) -> np.ndarray:
        return self.kp_rigid + np.asarray(exp_offsets, dtype=np.float32).reshape(NUM_KP, 3)

    def read(self, exp_offsets: np.ndarray) -> LipSignal:
        upper, lower = self.lips.signals(self.keypoints(exp_offsets))
        span = self.lips.opening_range
        opening = (upper + lower - self.closed_opening) / span if span > 0 else 0.0
        return LipSignal(upper, lower, float(min(max(opening, 0.0), 1.0)))
