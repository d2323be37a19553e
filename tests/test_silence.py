"""Silence weighter (eqs 4-6): offline paper form, causal windowed form, and their equality."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from msadtalker.silence import (
    CausalSilenceWeighter,
    SilenceConfig,
    ease_weight,
    silence_weights_offline,
    smooth_weights,
)


def _lips_with_gaps(
    n: int, gaps: list[tuple[int, int]], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like lip motion with perfectly still stretches at ``gaps`` [start, stop)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    opening = np.abs(np.sin(2 * np.pi * t / 7.3)) + 0.3 * rng.random(n)
    for start, stop in gaps:
        opening[start:stop] = opening[start - 1] if start > 0 else 0.0
    upper = 0.2 * opening
    lower = -1.0 * opening
    return upper, lower


def _run_causal(weighter: CausalSilenceWeighter, upper: np.ndarray, lower: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for u, low in zip(upper, lower, strict=True):
        out.extend(weighter.push(u, low))
    out.extend(weighter.flush())
    return out


def test_offline_finds_inserted_gaps() -> None:
    gaps = [(40, 70), (120, 160)]
    upper, lower = _lips_with_gaps(200, gaps)
    silent, weight = silence_weights_offline(upper, lower)
    for start, stop in gaps:
        # The first gap frame still differs from the frame before it.
        assert silent[start + 1 : stop].all()
        assert np.all(weight[start + 3 : stop - 2] == 0.0)
    speech = np.ones(200, dtype=bool)
    for start, stop in gaps:
        speech[start - 2 : stop + 3] = False
    assert weight[speech].mean() > 0.95


def test_offline_is_the_paper_arithmetic() -> None:
    rng = np.random.default_rng(1)
    upper, lower = rng.random(50), rng.random(50) * 3 + 2
    silent, weight = silence_weights_offline(upper, lower)
    un = (upper - upper.min()) / np.ptp(upper)
    ln = (lower - lower.min()) / np.ptp(lower)
    du = np.diff(un, prepend=un[0])
    dl = np.diff(ln, prepend=ln[0])
    expect_silent = (np.abs(du) < 0.02) & (np.abs(dl) < 0.02)
    np.testing.assert_array_equal(silent, expect_silent)
    w = np.where(expect_silent, 0.0, 1.0)
    padded = np.concatenate([[w[0]] * 2, w, [w[-1]] * 2])
    expect_weight = np.convolve(padded, np.ones(5) / 5, mode="valid")
    np.testing.assert_allclose(weight, expect_weight, atol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 17, 300])
def test_causal_with_clip_range_equals_offline_exactly(n: int) -> None:
    rng = np.random.default_rng(n)
    upper, lower = _lips_with_gaps(max(n, 1), [(n // 3, n // 3 + n // 4)] if n > 8 else [], n)
    upper, lower = upper[:n], lower[:n]
    silent, weight = silence_weights_offline(upper, lower)
    fixed = ((upper.min(), upper.max()), (lower.min(), lower.max()))
    out = _run_causal(CausalSilenceWeighter(lookahead=2, fixed_range=fixed), upper, lower)
    assert [d.index for d in out] == list(range(n))
    np.testing.assert_array_equal([d.silent for d in out], silent)
    np.testing.assert_array_equal([d.weight for d in out], weight)  # bit-identical
    del rng


@pytest.mark.parametrize("lookahead", [0, 1])
def test_short_lookahead_keeps_detection_and_emits_early(lookahead: int) -> None:
    upper, lower = _lips_with_gaps(120, [(30, 60)])
    silent, _ = silence_weights_offline(upper, lower)
    fixed = ((upper.min(), upper.max()), (lower.min(), lower.max()))
    weighter = CausalSilenceWeighter(lookahead=lookahead, fixed_range=fixed)
    emitted_after = []
    decisions = []
    for i, (u, low) in enumerate(zip(upper, lower, strict=True)):
        new = weighter.push(u, low)
        emitted_after.extend([i] * len(new))
        decisions.extend(new)
    decisions.extend(weighter.flush())
    assert weighter.delay_frames == lookahead
    assert all(
        after - d.index == lookahead for after, d in zip(emitted_after, decisions, strict=False)
    )
    np.testing.assert_array_equal([d.silent for d in decisions], silent)


def test_running_normalisation_does_not_call_noise_speech() -> None:
    """A long near-silence after speech, and a silent start, stay silent thanks to the floor."""
    rng = np.random.default_rng(2)
    speech_u, speech_l = _lips_with_gaps(100, [])
    quiet = 1e-3 * rng.standard_normal(25 * 30)  # 30 s of tiny jitter, longer than the window
    upper = np.concatenate([2e-3 * rng.standard_normal(50), speech_u, quiet])
    lower = np.concatenate([2e-3 * rng.standard_normal(50), speech_l, quiet])
    weighter = CausalSilenceWeighter(lookahead=2, range_floor=0.5)
    out = _run_causal(weighter, upper, lower)
    silent = np.array([d.silent for d in out])
    assert silent[:50].all()
    assert silent[151:].all()
    assert not silent[55:145].mean() > 0.3  # speech is mostly detected as speech


def test_without_floor_noise_is_amplified() -> None:
    """The reason for the floor: with none, long jitter gets normalised into 'speech'."""
    rng = np.random.default_rng(3)
    quiet = 1e-3 * rng.standard_normal(25 * 30)
    out = _run_causal(CausalSilenceWeighter(lookahead=2, range_floor=0.0), quiet, quiet)
    assert np.mean([d.silent for d in out]) < 0.5


def test_reset_drops_weight_at_once() -> None:
    upper, lower = _lips_with_gaps(60, [])
    weighter = CausalSilenceWeighter(lookahead=2, range_floor=0.5)
    for u, low in zip(upper[:40], lower[:40], strict=True):
        weighter.push(u, low)
    weighter.reset()
    first = weighter.push(upper[40], lower[40])
    assert first and first[0].weight == 0.0


def test_smoothing_and_easing_properties() -> None:
    w = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], dtype=float)
    s = smooth_weights(w, 5)
    assert s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(s * 5, np.round(s * 5))
    for x in np.linspace(0, 1, 11):
        e = ease_weight(float(x), "smoothstep")
        assert 0 <= e <= 1
    assert ease_weight(0.0, "smoothstep") == 0.0 and ease_weight(1.0, "smoothstep") == 1.0
    assert ease_weight(0.3, "linear") == 0.3


def test_bad_config() -> None:
    with pytest.raises(ValueError):
        CausalSilenceWeighter(SilenceConfig(window=4))
    with pytest.raises(ValueError):
        CausalSilenceWeighter(lookahead=-1)


# ---------------------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def speech_clips() -> dict[str, Any]:
    speech = pytest.importorskip("speech")
    if not speech.have_espeak():
        pytest.skip("espeak-ng not installed")
    return {
        lang: speech.speech_with_gaps(texts, lang)
        for lang, texts in (("en", speech.ENGLISH), ("cmn", speech.MANDARIN))
    }


def _pipeline_silence(audio: np.ndarray) -> tuple[np.ndarray, ...]:
    from streamer.assembly import build_motion_stages
    from streamer.config import Config
    from streamer.pipeline import Pipeline
    from streamer.types import AudioChunk, MotionFrame

    pipeline: Pipeline[MotionFrame] = Pipeline(build_motion_stages(Config()))
    frames = list(
        pipeline.run(
            AudioChunk(samples=audio[i : i + 320], start=i) for i in range(0, len(audio), 320)
        )
    )
    silent = np.array([f.silence.silent for f in frames])
    weight = np.array([f.silence.weight for f in frames])
    upper = np.array([f.lips.upper_lip for f in frames])
    lower = np.array([f.lips.lower_lip for f in frames])
    return silent, weight, upper, lower


@pytest.mark.parametrize("snr_db", [None, 10.0], ids=["clean", "pink10dB"])
@pytest.mark.parametrize("language", ["en", "cmn"])
def test_detector_finds_inserted_gaps_in_speech(
    speech_clips: dict[str, Any], language: str, snr_db: float | None
) -> None:
    from speech import add_pink_noise

    clip = speech_clips[language]
    audio = clip.audio if snr_db is None else add_pink_noise(clip.audio, snr_db, 5, clip)
    silent, weight, upper, lower = _pipeline_silence(audio)
    gap = clip.gap_frames()[: len(silent)]
    assert silent[gap].mean() > 0.9  # recall of the inserted silence, frame by frame
    interior = clip.gap_frames(settle_s=0.2, margin_s=0.12)[: len(silent)]
    assert (weight[interior] == 0.0).mean() > 0.95  # the head is at rest inside the gaps
    speech_frames = clip.speech_frames()[: len(silent)]
    assert (weight[speech_frames] >= 0.5).mean() > 0.8  # and moves while speaking
    # The streaming detection (running normalisation) calls the same frames as the paper's
    # offline form over the whole clip, here where every 8 s window holds speech.
    offline, _ = silence_weights_offline(upper, lower)
    assert (offline == silent).mean() > 0.97
