"""Cosine head pose (eqs 1-3): bounds, reproducibility, frequency band, smoothness."""

from __future__ import annotations

import numpy as np
import pytest

from msadtalker.pose import CosinePoseConfig, CosinePoseGenerator, _LowpassGaussian
from msadtalker.timing import FPS


def _jerk_rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.diff(x, n=3, axis=0) ** 2)) * FPS**3)


@pytest.mark.parametrize("noise", ["lowpass", "iid"])
@pytest.mark.parametrize("sigma_frac", [0.05, 0.6])
def test_pose_never_leaves_amplitude(noise: str, sigma_frac: float) -> None:
    config = CosinePoseConfig(noise=noise, noise_sigma_frac=sigma_frac)  # type: ignore[arg-type]
    poses = CosinePoseGenerator(config, seed=3).generate(20_000)
    limits = np.array(config.amplitude_deg)
    assert np.all(np.abs(poses) <= limits + 1e-12)
    # The clamp must actually bite when the noise is large (otherwise this test proves nothing).
    if sigma_frac > 0.5:
        assert np.any(np.isclose(np.abs(poses), limits))


def test_pose_uses_its_range() -> None:
    config = CosinePoseConfig()
    poses = CosinePoseGenerator(config, seed=1).generate(FPS * 60)
    peak = np.abs(poses).max(axis=0)
    assert np.all(peak > 0.7 * np.array(config.amplitude_deg))


def test_pose_is_reproducible_and_seeded() -> None:
    a = CosinePoseGenerator(seed=5).generate(500)
    b = CosinePoseGenerator(seed=5).generate(500)
    c = CosinePoseGenerator(seed=6).generate(500)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1.0


def test_pose_step_equals_generate_in_blocks() -> None:
    whole = CosinePoseGenerator(seed=2).generate(300)
    gen = CosinePoseGenerator(seed=2)
    parts = [gen.generate(n) for n in (1, 7, 50, 2, 240)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))


def test_pose_starts_at_rest() -> None:
    config = CosinePoseConfig()
    for seed in range(20):
        first = CosinePoseGenerator(config, seed=seed).step()
        sigma = config.noise_sigma_frac * np.array(config.amplitude_deg)
        assert np.all(np.abs(first) <= 4 * sigma)


def test_pose_frequency_within_paper_band() -> None:
    config = CosinePoseConfig(noise_sigma_frac=0.0)
    poses = CosinePoseGenerator(config, seed=4).generate(FPS * 120)
    for axis in range(3):
        x = poses[:, axis] - poses[:, axis].mean()
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        freqs = np.fft.rfftfreq(len(x), 1 / FPS)
        band = (freqs >= 0.7) & (freqs <= 1.6)
        assert (spectrum[band] ** 2).sum() > 0.8 * (spectrum**2).sum()


def test_pose_is_not_periodic() -> None:
    """Per-cycle frequency re-draws: the signal does not repeat itself."""
    poses = CosinePoseGenerator(CosinePoseConfig(noise_sigma_frac=0.0), seed=8).generate(2000)
    pitch = poses[:, 0] - poses[:, 0].mean()
    ac = np.correlate(pitch, pitch, mode="full")[len(pitch) - 1 :]
    ac /= ac[0]
    assert ac[10:].max() < 0.9


def test_lowpass_noise_has_unit_variance_and_less_jerk() -> None:
    rng = np.random.default_rng(0)
    lp = _LowpassGaussian(rng, cutoff_hz=1.5, fps=FPS)
    x = np.array([lp.step() for _ in range(100_000)])
    assert abs(x.std() - 1.0) < 0.05
    default = CosinePoseGenerator(CosinePoseConfig(noise="lowpass"), seed=0).generate(5000)
    iid = CosinePoseGenerator(CosinePoseConfig(noise="iid"), seed=0).generate(5000)
    for axis in range(3):
        # About an order of magnitude (8-10x over 10 minutes, msadtalker bench motion).
        assert _jerk_rms(iid[:, axis]) > 6 * _jerk_rms(default[:, axis])


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        CosinePoseGenerator(CosinePoseConfig(freq_min_hz=2.0, freq_max_hz=1.0))
    with pytest.raises(ValueError):
        CosinePoseGenerator(CosinePoseConfig(amplitude_deg=(-1.0, 1.0, 1.0)))
