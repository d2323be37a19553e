"""Optional idle life (gaze shifts, head micro-motion) and the lips' shape through the motion
stage: off by default, seeded, bounded; the shape is damped in silence but relaxes at once."""

from __future__ import annotations

import numpy as np
import pytest

from msadtalker.errors import ConfigError
from msadtalker.idle import IdleConfig, IdleMotion
from streamer.config import load_config
from streamer.stages.motion import MotionStage
from streamer.types import FeatureFrame, LipFrame, SilenceFrame


def test_off_by_default() -> None:
    idle = IdleMotion()
    for _ in range(500):
        assert idle.step() == ((0.0, 0.0), (0.0, 0.0, 0.0))


def _run(config: IdleConfig, seed: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    idle = IdleMotion(config, seed=seed)
    steps = [idle.step() for _ in range(frames)]
    return np.array([g for g, _ in steps]), np.array([m for _, m in steps])


def test_gaze_fixates_and_shifts_quickly_within_its_range() -> None:
    config = IdleConfig(gaze=True)
    gaze, _ = _run(config, 3, 25 * 60)
    assert np.abs(gaze).max() <= config.gaze_amplitude + 1e-9
    moving = np.hypot(*np.diff(gaze, axis=0).T) > 1e-6
    assert 0.02 < moving.mean() < 0.3  # mostly still (fixations), sometimes shifting
    shifts = np.flatnonzero(np.diff(moving.astype(int)) == 1)
    assert 10 < len(shifts) < 60  # a shift every 1-6 s over a minute
    # Seeded: the same seed gives the same gaze, another seed another one.
    again, _ = _run(config, 3, 25 * 60)
    other, _ = _run(config, 4, 25 * 60)
    np.testing.assert_array_equal(gaze, again)
    assert np.abs(gaze - other).max() > 0.1


def test_micro_motion_is_small_and_slow() -> None:
    config = IdleConfig(micro_motion=True)
    _, micro = _run(config, 1, 25 * 30)
    assert np.abs(micro).max() <= config.micro_deg + 1e-9
    assert np.abs(micro).max() > 0.3 * config.micro_deg
    assert np.abs(np.diff(micro, axis=0)).max() < 0.01  # degrees per frame: no jitter


def test_config_section_and_validation() -> None:
    config = load_config(None, {"idle.gaze": True, "idle.micro_deg": 0.1})
    assert config.idle.gaze and not config.idle.micro_motion and config.idle.micro_deg == 0.1
    with pytest.raises(ConfigError, match="idle"):
        load_config(None, {"idle.micro_deg": 5.0})


def _frame(i: int, wide: float, weight: float) -> SilenceFrame:
    features = FeatureFrame(i, np.zeros(640, np.float32), np.zeros((80, 16), np.float32))
    lips = LipFrame(features, 0.0, 0.1, 0.3, mouth_wide=wide)
    return SilenceFrame(lips=lips, silent=weight == 0.0, weight=weight)


def test_lip_shape_is_damped_in_silence_but_relaxes_at_once() -> None:
    stage = MotionStage()
    (first,) = stage.push(_frame(0, -0.8, 1.0))
    assert first.mouth_wide == pytest.approx(-0.8)  # speech: passed unchanged
    (jump,) = stage.push(_frame(1, 0.8, 0.0))
    assert -0.8 < jump.mouth_wide < 0.0  # silence: a new shape is damped...
    (relax,) = stage.push(_frame(2, 0.0, 0.0))
    assert relax.mouth_wide == 0.0  # ...a return to neutral is not


def test_motion_stage_carries_gaze_and_micro_motion_only_when_on() -> None:
    plain = MotionStage(seed=2)
    lively = MotionStage(seed=2, idle=IdleConfig(gaze=True, micro_motion=True))
    still = MotionStage(seed=2, still=True, idle=IdleConfig(gaze=True, micro_motion=True))
    frames = [_frame(i, 0.0, 0.0) for i in range(250)]
    a = [plain.push(f)[0] for f in frames]
    b = [lively.push(f)[0] for f in frames]
    c = [still.push(f)[0] for f in frames]
    assert all(m.gaze == (0.0, 0.0) for m in a)
    assert all(m.pose.pitch == m.pose.yaw == m.pose.roll == 0.0 for m in a)  # silent: at rest
    assert any(m.gaze != (0.0, 0.0) for m in b)
    assert max(abs(m.pose.yaw) for m in b) > 0.0
    assert max(abs(m.pose.yaw) for m in b) <= IdleConfig().micro_deg + 1e-9
    assert all(m.pose.yaw == 0.0 for m in c) and any(m.gaze != (0.0, 0.0) for m in c)
