"""msadtalker.settle: the pose blend factor of eq. 6 and the damping of lip motion in silence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from msadtalker.settle import MotionDamper, PoseBlend, smoothstep
from msadtalker.silence import smooth_weights

if TYPE_CHECKING:
    from streamer.types import MotionFrame

# (the speech clip of ``speech.speech_with_gaps``, the motion frames of its audio)
EnglishMotion = tuple[Any, list["MotionFrame"]]


def _steps(blend: PoseBlend, weights: np.ndarray) -> np.ndarray:
    return np.array([blend.step(float(w)) for w in weights])


def _pause(speech: int, pause: int, after: int, lead: int = 20) -> np.ndarray:
    """w~ of a stream that starts silent (as every stream does), speaks, pauses, speaks."""
    raw = np.concatenate([np.zeros(lead), np.ones(speech), np.zeros(pause), np.ones(after)])
    return smooth_weights(raw, 5)


def test_paper_setting_is_w_itself() -> None:
    w = _pause(20, 30, 20)
    np.testing.assert_array_equal(_steps(PoseBlend("linear", 0.0), w), w)


def test_smoothstep_only() -> None:
    w = _pause(20, 30, 20)
    np.testing.assert_array_equal(
        _steps(PoseBlend("smoothstep", 0.0), w), [smoothstep(x) for x in w]
    )


def test_eased_blend_reaches_rest_and_speech_exactly() -> None:
    w = _pause(40, 40, 40)
    omega = _steps(PoseBlend("smoothstep", 0.06), w)
    assert np.all((omega >= 0) & (omega <= 1))
    assert np.all(omega[:15] == 0.0)  # silent start: at rest
    assert np.all(omega[40:56] == 1.0)  # steady speech: exactly the generator's pose
    assert np.all(omega[78:96] == 0.0)  # steady silence: exactly P_initial
    assert np.all(omega[-10:] == 1.0)


def test_eased_blend_is_smoother_than_the_paper() -> None:
    w = _pause(40, 40, 40)
    paper = _steps(PoseBlend("linear", 0.0), w)
    eased = _steps(PoseBlend("smoothstep", 0.06), w)
    # Second and third differences of the blend factor: the corners at each end of the
    # paper's 5-frame ramp are what make the head jerk as it stops and starts.
    assert np.abs(np.diff(eased, 2)).max() < 0.5 * np.abs(np.diff(paper, 2)).max()
    assert np.abs(np.diff(eased, 3)).max() < 0.7 * np.abs(np.diff(paper, 3)).max()


def test_short_pause_is_a_shallow_dip() -> None:
    w = _pause(40, 3, 40)  # a 120 ms pause between words
    assert w.min() < 0.5
    eased = _steps(PoseBlend("smoothstep", 0.06), w)
    assert eased[40:].min() > 0.5


def test_blend_reset_goes_to_rest() -> None:
    blend = PoseBlend("smoothstep", 0.06)
    for _ in range(30):
        blend.step(1.0)
    blend.reset()
    assert blend.step(0.0) == 0.0


def test_damper_passes_speech_unchanged() -> None:
    x = np.random.default_rng(0).random(50)
    damper = MotionDamper(0.3)
    np.testing.assert_array_equal([damper.step(float(v), 1.0) for v in x], x)


def test_damper_damps_jitter_in_silence_but_keeps_a_steady_value() -> None:
    rng = np.random.default_rng(1)
    jitter = 0.3 + 0.05 * rng.standard_normal(200)
    damper = MotionDamper(0.3)
    y = np.array([damper.step(float(v), 0.0) for v in jitter])
    assert np.diff(y[20:]).std() < 0.3 * np.diff(jitter[20:]).std()
    steady = MotionDamper(0.3)
    for _ in range(10):
        steady.step(0.7, 1.0)
    held = [steady.step(0.7, 0.0) for _ in range(20)]
    assert held == [0.7] * 20  # a held vowel the detector calls silent keeps its opening


def test_damper_follows_the_source_shut_and_settles_exactly() -> None:
    damper = MotionDamper(0.3, settle=0.02)
    for _ in range(10):
        damper.step(0.8, 1.0)
    # The source closes while the weight falls (the end of an utterance).
    weights = [0.8, 0.6, 0.4, 0.2] + [0.0] * 30
    source = [0.3, 0.05, 0.0, 0.0] + [0.0] * 30
    y = [damper.step(x, w) for x, w in zip(source, weights, strict=True)]
    assert max(y) <= 0.8
    assert all(a >= b for a, b in zip(y, y[1:], strict=False))  # never reopens
    settled = next(i for i, v in enumerate(y) if v == 0.0)
    assert settled <= 12  # shut within half a second
    assert all(v == 0.0 for v in y[settled:])


def test_damper_on_arrays_and_rest() -> None:
    damper = MotionDamper(0.3)
    a = np.ones(64, np.float32)
    np.testing.assert_array_equal(damper.step(a, 1.0), a)
    rest = damper.hold_rest(np.zeros(64, np.float32))
    assert not rest.any()
    y = damper.step(a, 0.0)
    assert 0 < y[0] < 0.2  # continues from the rest, slowly, in silence


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        PoseBlend("smoothstep", -0.1)
    with pytest.raises(ValueError):
        MotionDamper(-1.0)


# ---------------------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def english_motion() -> EnglishMotion:
    speech = pytest.importorskip("speech")
    if not speech.have_espeak():
        pytest.skip("espeak-ng not installed")
    from streamer.assembly import build_motion_stages
    from streamer.config import Config
    from streamer.pipeline import Pipeline
    from streamer.types import AudioChunk

    clip = speech.speech_with_gaps(speech.ENGLISH[:3], "en", gap_s=1.2)
    audio = speech.add_pink_noise(clip.audio, 20.0, seed=2, clip=clip)
    pipeline: Pipeline[MotionFrame] = Pipeline(build_motion_stages(Config()))
    frames = list(pipeline.run([AudioChunk(audio, 0)]))
    return clip, frames


def test_avatar_comes_to_rest_in_pauses_of_real_speech(english_motion: EnglishMotion) -> None:
    clip, frames = english_motion
    n = len(frames)
    pose = np.array([[f.pose.pitch, f.pose.yaw, f.pose.roll] for f in frames])
    mouth = np.array([f.mouth_open for f in frames])
    settled = clip.gap_frames(settle_s=0.5, margin_s=0.12)[:n]
    assert settled.sum() > 40
    assert np.abs(pose[settled]).max() < 0.05  # at rest (degrees) half a second into a pause
    assert np.all(mouth[settled] == 0.0)  # exactly shut
    still = clip.gap_frames(settle_s=0.7, margin_s=0.12)[:n]
    assert still.sum() >= 20 and np.all(pose[still] == 0.0)  # then exactly P_initial
    speech_frames = clip.speech_frames()[:n]
    step = np.zeros(n)
    step[1:] = np.linalg.norm(np.diff(pose, axis=0), axis=1)
    # The head eases back: no step into or out of a pause is larger than the head's own
    # fast swings while speaking.
    assert step[~speech_frames].max() <= 1.2 * np.percentile(step[speech_frames], 99)


def test_mouth_never_reopens_as_a_pause_begins(english_motion: EnglishMotion) -> None:
    clip, frames = english_motion
    mouth = np.array([f.mouth_open for f in frames])
    for start, end in clip.gaps[1:-1]:  # pauses between sentences
        first = round(start * 25) + 1
        last = round(end * 25) - 4
        stretch = mouth[first:last]
        assert np.all(np.diff(stretch) <= 0), stretch[:12]
        assert stretch[-1] == 0.0
