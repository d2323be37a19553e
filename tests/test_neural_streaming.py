"""Streaming neural motion with bounded lookahead vs the whole-clip (official) computation.

Real networks (seed-0 synthetic checkpoints: ExpNet, MappingNet, face recon, KPDetector; no
generator). With full lookahead (13 frames) the incremental lip signal and driving keypoints
must equal the offline ones bit for bit; with less, exactly the frames whose whole window has
arrived must agree, and each stage must hold back exactly its declared delay.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from msadtalker.audio import load_audio, log_mel, mel_windows  # noqa: E402
from msadtalker.avatar import default_avatar_path  # noqa: E402
from msadtalker.neural.motion import NeuralMotion  # noqa: E402
from msadtalker.neural.offline import (  # noqa: E402
    clip_windows,
    offline_driving_keypoints,
    offline_expressions,
    offline_lip_signals,
)
from msadtalker.timing import SAMPLES_PER_FRAME  # noqa: E402
from streamer.assembly import build_motion_stages  # noqa: E402
from streamer.assembly.neural import NeuralAvatar  # noqa: E402
from streamer.config import Config, load_config  # noqa: E402
from streamer.pipeline import Pipeline  # noqa: E402
from streamer.stages.features import FeatureStage  # noqa: E402
from streamer.stages.neural_keypoints import NeuralKeypointStage  # noqa: E402
from streamer.stages.neural_lips import NeuralLipStage  # noqa: E402
from streamer.types import AudioChunk, FeatureFrame, MotionFrame  # noqa: E402

pytestmark = [pytest.mark.neural, pytest.mark.slow]

FRAMES = 30
FULL = 13


@pytest.fixture(scope="module")
def motion(
    synthetic_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NeuralMotion]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MSADTALKER_CACHE", str(tmp_path_factory.mktemp("neural-cache")))
        shared = NeuralAvatar(
            load_config(), default_avatar_path(), synthetic_checkpoints, None, render=False
        )
        yield shared.motion
        shared.engines.close()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    wav = load_audio(Path("msadtalker/assets/sample_speech_en.wav"), warn=False)
    start = 4 * SAMPLES_PER_FRAME  # the first words
    return wav[start : start + FRAMES * SAMPLES_PER_FRAME + 123]


def _chunks(wav: np.ndarray, size: int = 700) -> list[AudioChunk]:
    return [AudioChunk(wav[s : s + size], s) for s in range(0, len(wav), size)]


@pytest.fixture(scope="module")
def features(speech: np.ndarray) -> list[FeatureFrame]:
    stage = FeatureStage(3)
    frames = [f for chunk in _chunks(speech) for f in stage.push(chunk)]
    return frames + stage.flush()


def _config(lookahead: int) -> Config:
    return load_config(overrides={"pipeline.lookahead_ms": 40 * lookahead})


def _lips(motion: NeuralMotion, features: list[FeatureFrame], lookahead: int) -> list[Any]:
    stage = NeuralLipStage(motion, lookahead)
    out: list[Any] = []
    for pushed, frame in enumerate(features, start=1):
        out += stage.push(frame)
        assert len(out) == max(0, pushed - lookahead), "lip stage held back the wrong amount"
    return out + stage.flush()


@pytest.fixture(scope="module")
def offline_deltas(motion: NeuralMotion, speech: np.ndarray) -> np.ndarray:
    return offline_expressions(motion, mel_windows(log_mel(speech), FRAMES))


def test_full_lookahead_lips_equal_offline(
    motion: NeuralMotion, features: list[FeatureFrame], offline_deltas: np.ndarray
) -> None:
    streamed = _lips(motion, features, FULL)
    assert [f.index for f in streamed] == list(range(FRAMES))
    np.testing.assert_array_equal(np.stack([f.expression for f in streamed]), offline_deltas)
    offline = offline_lip_signals(motion, offline_deltas)
    assert [(f.upper_lip, f.lower_lip, f.mouth_open) for f in streamed] == [
        (s.upper, s.lower, s.mouth_open) for s in offline
    ]
    assert np.ptp([f.lower_lip for f in streamed]) > 0  # the signal moves with the speech


@pytest.mark.parametrize("lookahead", [0, 4])
def test_short_lookahead_lips_agree_where_the_window_is_complete(
    motion: NeuralMotion, features: list[FeatureFrame], offline_deltas: np.ndarray, lookahead: int
) -> None:
    streamed = [f.lower_lip for f in _lips(motion, features, lookahead)]
    offline = [s.lower for s in offline_lip_signals(motion, offline_deltas)]
    tail = FRAMES - 1 - lookahead  # from here on every window reaches the clip's end
    assert streamed[tail:] == offline[tail:]
    assert streamed[:tail] != offline[:tail]


@pytest.fixture(scope="module")
def motion_frames(motion: NeuralMotion, speech: np.ndarray) -> list[MotionFrame]:
    stages = build_motion_stages(_config(FULL), lips=NeuralLipStage(motion, FULL))
    return list(Pipeline(stages).run(_chunks(speech)))


def _keypoints(motion: NeuralMotion, frames: list[MotionFrame], lookahead: int) -> np.ndarray:
    stage = NeuralKeypointStage(motion, lookahead)
    out: list[Any] = []
    for pushed, frame in enumerate(frames, start=1):
        out += stage.push(frame)
        assert len(out) == max(0, pushed - lookahead), "keypoint stage held back the wrong amount"
    out += stage.flush()
    assert [f.index for f in out] == [f.index for f in frames]
    assert all(f.kp_driving is not None for f in out)
    return np.stack([f.kp_driving for f in out])


def _drive_rows(motion: NeuralMotion, frames: list[Any]) -> np.ndarray:
    return np.stack(
        [
            motion.drive_row(f.expression, f.blink, (f.pose.pitch, f.pose.yaw, f.pose.roll))
            for f in frames
        ]
    )


def test_full_lookahead_keypoints_equal_offline(
    motion: NeuralMotion, motion_frames: list[Any], offline_deltas: np.ndarray
) -> None:
    assert len(motion_frames) == FRAMES
    # the whole chain's lips are the offline ones too (features at full lookahead are exact)
    np.testing.assert_array_equal(
        np.stack([f.lips.expression for f in motion_frames]), offline_deltas
    )
    streamed = _keypoints(motion, motion_frames, FULL)
    offline = offline_driving_keypoints(motion, _drive_rows(motion, motion_frames))
    np.testing.assert_array_equal(streamed, offline)
    assert np.ptp(streamed[:, :, 1], axis=0).max() > 0


@pytest.mark.parametrize("lookahead", [0, 2])
def test_short_lookahead_keypoints_use_the_clip_end_rule(
    motion: NeuralMotion, motion_frames: list[MotionFrame], lookahead: int
) -> None:
    streamed = _keypoints(motion, motion_frames, lookahead)
    rows = _drive_rows(motion, motion_frames)
    # frame i's window with lookahead L is the offline window of a clip cut after i + L
    for i in (0, 9, FRAMES - 1):
        cut = rows[: min(i + lookahead, FRAMES - 1) + 1]
        expected = motion.driving_keypoints(clip_windows(cut)[i])
        np.testing.assert_array_equal(streamed[i], expected, err_msg=f"frame {i}")
    offline = offline_driving_keypoints(motion, rows)
    assert np.abs(streamed[: -lookahead - 1] - offline[: -lookahead - 1]).max() > 0


def test_reset_brings_buffered_frames_to_the_photo_expression(
    motion: NeuralMotion, features: list[FeatureFrame]
) -> None:
    stage = NeuralLipStage(motion, 3)
    out: list[Any] = [f for frame in features[:8] for f in stage.push(frame)]
    assert len(out) == 5
    stage.reset()
    out += [f for frame in features[8:11] for f in stage.push(frame)]
    buffered = out[5:8]  # frames 5-7 were waiting when the reset came
    assert [f.index for f in buffered] == [5, 6, 7]
    assert all(not f.expression.any() for f in buffered)
    assert out[4].expression.any()  # already emitted: untouched
