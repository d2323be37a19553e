"""FeatureStage: official windows for any chunking, lookahead rule, delay, flush, reset."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from msadtalker.audio import log_mel, mel_windows
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.stages.features import FeatureStage, feature_delay_frames, window_reach
from streamer.types import AudioChunk, FeatureFrame


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    voiced = sum(np.sin(2 * np.pi * k * (110 + 20 * seed) * t) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 1.7 * t), 0, None) ** 2
    return (0.2 * envelope * voiced + 0.01 * rng.standard_normal(n)).astype(np.float32)


def chunk_sizes(kind: str | int, rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield int(rng.integers(1, 3000)) if kind == "random" else int(kind)


def run(
    stage: FeatureStage, x: np.ndarray, kind: str | int = 320, seed: int = 0
) -> tuple[list[FeatureFrame], list[int]]:
    """Push ``x`` in chunks; returns (frames, samples received when each frame came out)."""
    rng = np.random.default_rng(seed)
    frames: list[FeatureFrame] = []
    arrival: list[int] = []
    position = 0
    sizes = chunk_sizes(kind, rng)
    while position < len(x):
        size = next(sizes)
        out = stage.push(AudioChunk(samples=x[position : position + size], start=position))
        position = min(len(x), position + size)
        frames += out
        arrival += [position] * len(out)
    tail = stage.flush()
    frames += tail
    arrival += [len(x)] * len(tail)
    return frames, arrival


CHUNKS: list[str | int] = [160, 320, 592, 16000, "random"]  # 10 ms, 20 ms, 37 ms, 1 s, random


@pytest.mark.parametrize("kind", CHUNKS)
@pytest.mark.parametrize("lookahead", [2, 3])
def test_full_lookahead_gives_the_official_windows(
    golden: dict[str, np.ndarray], lookahead: int, kind: str | int
) -> None:
    x = golden["input_wav_loaded"]
    frames, _ = run(FeatureStage(lookahead), x, kind)
    assert [f.index for f in frames] == list(range(50))
    mel = np.stack([f.mel for f in frames])
    assert mel.dtype == np.float32 and mel.shape == (50, 80, 16)
    np.testing.assert_array_equal(mel, golden["expnet_in_mels"][0, :, 0])
    np.testing.assert_array_equal(np.concatenate([f.audio for f in frames]), x[:32000])


@pytest.mark.parametrize("lookahead", [0, 1])
def test_short_lookahead_keeps_the_frame_columns_exact(lookahead: int) -> None:
    x = speechlike(3.17, seed=1)
    reference = mel_windows(log_mel(x), len(x) // SAMPLES_PER_FRAME)
    outputs = []
    for kind in CHUNKS:
        frames, _ = run(FeatureStage(lookahead), x, kind, seed=7)
        outputs.append(np.stack([f.mel for f in frames]))
    for mel in outputs[1:]:  # the chunking never changes a window
        np.testing.assert_array_equal(mel, outputs[0])
    exact = window_reach(lookahead) + 1  # 10 columns at L = 0, 14 at L = 1
    np.testing.assert_array_equal(outputs[0][:, :, :exact], reference[:, :, :exact])
    assert not np.array_equal(outputs[0], reference)  # the future columns are clamped
    # Clamped columns repeat the last allowed one.
    clamped = outputs[0][:, :, exact:]
    assert np.array_equal(clamped, np.repeat(outputs[0][:, :, exact - 1 : exact], 16 - exact, 2))


@pytest.mark.parametrize("lookahead", [0, 1, 2, 3])
def test_delay_is_what_is_declared(lookahead: int) -> None:
    stage = FeatureStage(lookahead)
    assert stage.delay_frames == feature_delay_frames(lookahead) == [1, 2, 3, 3][lookahead]
    x = speechlike(2.0)
    frames, arrival = run(stage, x, kind=SAMPLES_PER_FRAME)
    waits = [
        got // SAMPLES_PER_FRAME - (f.index + 1) for f, got in zip(frames, arrival, strict=True)
    ]
    assert max(waits) == stage.delay_frames  # frame i out once frame i + delay is in
    assert min(waits) >= 0


@pytest.mark.parametrize("samples", [640, 641, 1279, 5000, 32300])
def test_frame_count_is_floor_of_samples(samples: int) -> None:
    x = speechlike(samples / SAMPLE_RATE + 0.01)[:samples]
    for lookahead in (0, 3):
        frames, _ = run(FeatureStage(lookahead), x, kind=700)
        assert len(frames) == samples // SAMPLES_PER_FRAME
    frames, _ = run(FeatureStage(3), x, kind=700)
    reference = mel_windows(log_mel(x), samples // SAMPLES_PER_FRAME)
    np.testing.assert_array_equal(np.stack([f.mel for f in frames]), reference)


def test_less_than_one_frame_gives_nothing() -> None:
    stage = FeatureStage(0)
    assert stage.push(AudioChunk(samples=np.zeros(500, np.float32), start=0)) == []
    assert stage.flush() == []


def test_chunks_must_be_contiguous() -> None:
    stage = FeatureStage(0)
    stage.push(AudioChunk(samples=np.zeros(100, np.float32), start=0))
    with pytest.raises(ValueError, match="contiguous"):
        stage.push(AudioChunk(samples=np.zeros(100, np.float32), start=150))
    with pytest.raises(ValueError, match="contiguous"):
        FeatureStage(0).push(AudioChunk(samples=np.zeros(100, np.float32), start=640))


def test_lookahead_out_of_range() -> None:
    with pytest.raises(ValueError):
        FeatureStage(4)


def test_flush_leaves_a_fresh_stage() -> None:
    x = speechlike(1.0)
    stage = FeatureStage(1)
    first, _ = run(stage, x, kind=333)
    second, _ = run(stage, x, kind=333)
    assert [f.index for f in second] == [f.index for f in first]
    np.testing.assert_array_equal(
        np.stack([f.mel for f in first]), np.stack([f.mel for f in second])
    )


@pytest.mark.parametrize("lookahead", [0, 2, 3])
def test_reset_replaces_held_audio_by_silence_and_keeps_counting(lookahead: int) -> None:
    x = speechlike(3.0, seed=2)
    reset_at = 27_500  # samples pushed before the barge-in
    stage = FeatureStage(lookahead)
    before, _ = run_prefix(stage, x[:reset_at])
    held_from = SAMPLES_PER_FRAME * len(before)  # first sample of the first frame not emitted
    stage.reset()
    after = []
    for start in range(reset_at, len(x), 320):
        after += stage.push(AudioChunk(samples=x[start : start + 320], start=start))
    after += stage.flush()
    frames = before + after
    assert [f.index for f in frames] == list(range(len(x) // SAMPLES_PER_FRAME))
    # Frames after the reset equal a run whose input was silent from held_from to reset_at.
    silenced = x.copy()
    silenced[held_from:reset_at] = 0.0
    reference, _ = run(FeatureStage(lookahead), silenced, kind=320)
    for got, want in zip(after, reference[len(before) :], strict=True):
        np.testing.assert_array_equal(got.mel, want.mel)
        np.testing.assert_array_equal(got.audio, want.audio)
    assert not after[0].audio.any()  # the interrupted speech is not played


def run_prefix(stage: FeatureStage, x: np.ndarray) -> tuple[list[FeatureFrame], int]:
    frames: list[FeatureFrame] = []
    for start in range(0, len(x), 320):
        frames += stage.push(AudioChunk(samples=x[start : start + 320], start=start))
    return frames, len(x)
