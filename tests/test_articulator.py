"""Default-path audio articulator: closed in silence (clean and in noise), follows speech,
level invariant, vowels open more than fricatives and nasals, deterministic, chunking-proof."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.signal import lfilter
from speech import (
    ENGLISH,
    MANDARIN,
    SpeechClip,
    add_pink_noise,
    espeak,
    frame_rms,
    have_espeak,
    speech_with_gaps,
)

from msadtalker.articulator import ArticulatorConfig, AudioArticulator
from msadtalker.formants import formants
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.bench.speech import pink_noise
from streamer.stages.features import FeatureStage
from streamer.stages.lips import ArticulatorStage
from streamer.types import AudioChunk, FeatureFrame, LipFrame

needs_espeak = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")


def articulate(audio: np.ndarray, chunk: int = 640) -> list[LipFrame]:
    """Audio through the default-path stages: FeatureStage(lookahead 0) -> ArticulatorStage."""
    features = FeatureStage(lookahead_frames=0)
    lips = ArticulatorStage()
    out: list[LipFrame] = []
    for start in range(0, len(audio), chunk):
        for frame in features.push(AudioChunk(samples=audio[start : start + chunk], start=start)):
            out += lips.push(frame)
    for frame in features.flush():
        out += lips.push(frame)
    return out


def mouth(frames: list[LipFrame]) -> np.ndarray:
    return np.array([f.mouth_open for f in frames])


def best_lag_correlation(signal: np.ndarray, envelope: np.ndarray, max_lag: int = 2) -> float:
    """Highest correlation of ``signal`` with ``envelope`` delayed by 0..max_lag frames."""
    return max(
        float(np.corrcoef(signal[lag:], envelope[: len(envelope) - lag])[0, 1])
        for lag in range(max_lag + 1)
    )


@pytest.fixture(scope="session")
def clips() -> dict[str, SpeechClip]:
    if not have_espeak():
        pytest.skip("espeak-ng not installed")
    return {
        "en": speech_with_gaps(ENGLISH, "en"),
        "cmn": speech_with_gaps(MANDARIN, "cmn"),
    }


def noisy(clip: SpeechClip, snr_db: float | None) -> np.ndarray:
    return clip.audio if snr_db is None else add_pink_noise(clip.audio, snr_db, seed=11, clip=clip)


# ---------------------------------------------------------------------------- speech


@needs_espeak
@pytest.mark.parametrize("snr_db", [None, 10.0], ids=["clean", "pink10dB"])
@pytest.mark.parametrize("language", ["en", "cmn"])
def test_closed_in_gaps_open_in_speech(
    clips: dict[str, SpeechClip], language: str, snr_db: float | None
) -> None:
    clip = clips[language]
    opening = mouth(articulate(noisy(clip, snr_db)))
    assert len(opening) == clip.frames
    # After settling (0.3 s), up to the frame whose analysis window reaches the next onset.
    gaps = clip.gap_frames(settle_s=0.3, margin_s=0.04)
    assert gaps.sum() > 100
    assert opening[gaps].max() < 0.05
    speech = clip.speech_frames()
    assert opening[speech].mean() > 0.2
    assert np.percentile(opening[speech], 90) > 0.5


@needs_espeak
@pytest.mark.parametrize("snr_db", [None, 10.0], ids=["clean", "pink10dB"])
@pytest.mark.parametrize("language", ["en", "cmn"])
def test_follows_the_speech_envelope(
    clips: dict[str, SpeechClip], language: str, snr_db: float | None
) -> None:
    clip = clips[language]
    opening = mouth(articulate(noisy(clip, snr_db)))
    envelope = frame_rms(clip.audio)  # of the clean speech: what the mouth should follow
    assert best_lag_correlation(opening, envelope) > 0.6


@needs_espeak
def test_silence_is_exactly_still(clips: dict[str, SpeechClip]) -> None:
    frames = articulate(clips["en"].audio)
    gaps = clips["en"].gap_frames(settle_s=0.3, margin_s=0.04)
    lips = np.array([(f.upper_lip, f.lower_lip, f.mouth_open, f.mouth_wide) for f in frames])
    assert not lips[gaps].any()  # rest is exactly 0: the silence weighter sees no motion


@needs_espeak
def test_level_invariance() -> None:
    quiet = speech_with_gaps(ENGLISH, "en", level_dbfs=-30.0)
    loud = speech_with_gaps(ENGLISH, "en", level_dbfs=0.0)
    a, b = mouth(articulate(quiet.audio)), mouth(articulate(loud.audio))
    settled = slice(round(quiet.gaps[1][1] * 25), None)  # after the first sentence
    assert np.corrcoef(a[settled], b[settled])[0, 1] > 0.97
    assert np.abs(a[settled] - b[settled]).mean() < 0.05


@needs_espeak
def test_long_noisy_silence_is_not_amplified_into_speech() -> None:
    clip = speech_with_gaps(ENGLISH[:2], "en", tail_s=20.0)
    opening = mouth(articulate(add_pink_noise(clip.audio, 10.0, seed=3, clip=clip)))
    tail = round((clip.gaps[-1][0] + 0.3) * 25)
    assert opening[tail:].max() < 0.05


@pytest.mark.parametrize("level_dbfs", [-60.0, -40.0, -20.0])
def test_noise_alone_never_opens_the_mouth(level_dbfs: float) -> None:
    noise = (pink_noise(SAMPLE_RATE * 12, seed=5) * 10 ** (level_dbfs / 20)).astype(np.float32)
    assert mouth(articulate(noise)).max() < 0.05


@needs_espeak
def test_vowels_open_more_than_fricatives_and_nasals() -> None:
    gap = np.zeros(4800, np.float32)
    parts, spans, position = [np.zeros(8000, np.float32)], {}, 8000
    for phoneme in ["A:", "s", "S", "f", "m", "n", "O:"]:
        utterance = espeak(f"[[{phoneme}{phoneme}{phoneme}{phoneme}]]", "en")
        spans[phoneme] = (position // 640 + 3, (position + len(utterance)) // 640 - 2)
        parts += [utterance, gap]
        position += len(utterance) + len(gap)
    opening = mouth(articulate(np.concatenate(parts)))
    median = {p: float(np.median(opening[a:b])) for p, (a, b) in spans.items()}
    for vowel in ("A:", "O:"):
        assert median[vowel] > 0.4
    for consonant in ("s", "S", "f", "m", "n"):
        assert median[consonant] < 0.15


@needs_espeak
@pytest.mark.parametrize("text", ["[[mA:mA:mA:mA:]]", "[[pA:pA:pA:pA:]]"])
def test_bilabials_close_the_mouth_between_vowels(text: str) -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), espeak(text, "en")])
    opening = mouth(articulate(audio))
    voiced = np.flatnonzero(opening > 0.8)
    inner = opening[voiced[0] : voiced[-1]]
    # Local minima between open vowels: the lips come (nearly) together at each consonant.
    minima = [
        inner[k]
        for k in range(1, len(inner) - 1)
        if inner[k] <= inner[k - 1] and inner[k] < inner[k + 1]
    ]
    assert len(minima) >= 3 and max(minima) < 0.45


@needs_espeak
def test_spread_vowel_is_wider_than_open_vowel() -> None:
    parts = [np.zeros(8000, np.float32)]
    spans, position = {}, 8000
    for phoneme in ["A:", "i:"]:
        utterance = espeak(f"[[{phoneme}{phoneme}{phoneme}]]", "en")
        spans[phoneme] = (position // 640 + 3, (position + len(utterance)) // 640 - 2)
        parts += [utterance, np.zeros(4800, np.float32)]
        position += len(utterance) + 4800
    frames = articulate(np.concatenate(parts))
    wide = np.array([f.mouth_wide for f in frames])
    assert np.median(wide[slice(*spans["i:"])]) > np.median(wide[slice(*spans["A:"])]) + 0.3


def held_vowels(phonemes: list[str]) -> tuple[np.ndarray, dict[str, slice]]:
    """Each eSpeak NG phoneme held (phoneme input, slow), 0.3 s apart; returns the audio and
    the frames well inside each vowel."""
    parts = [np.zeros(8000, np.float32)]
    spans, position = {}, 8000
    for phoneme in phonemes:
        utterance = espeak(f"[[{phoneme}{phoneme}{phoneme}]]", "en")
        spans[phoneme] = slice(position // 640 + 3, (position + len(utterance)) // 640 - 2)
        parts += [utterance, np.zeros(4800, np.float32)]
        position += len(utterance) + 4800
    return np.concatenate(parts), spans


@needs_espeak
def test_rounded_vowels_round_the_lips_and_front_vowels_spread_them() -> None:
    audio, spans = held_vowels(["u:", "O:", "w", "i:", "A:"])
    wide = np.array([f.mouth_wide for f in articulate(audio)])
    shape = {p: float(np.median(wide[span])) for p, span in spans.items()}
    assert shape["u:"] < -0.4 and shape["O:"] < -0.4 and shape["w"] < -0.15, shape
    assert shape["i:"] > 0.4, shape
    assert abs(shape["A:"]) < 0.2, shape  # open, unrounded: neutral
    assert shape["i:"] - shape["u:"] > 0.9, shape


@needs_espeak
def test_formants_of_held_vowels() -> None:
    # F1-F2 by linear prediction on the mel envelope land where the vowel's are: /i:/ close
    # front (low F1, high F2), /u:/ close with a lower F2, /A:/ open (high F1) and back.
    audio, spans = held_vowels(["i:", "u:", "A:"])
    features = FeatureStage(lookahead_frames=0)
    mels = []
    for start in range(0, len(audio), 640):
        mels += [f.mel for f in features.push(AudioChunk(audio[start : start + 640], start))]
    read = {}
    for phoneme, span in spans.items():
        found = []
        for mel in mels[span]:
            power = np.power(10.0, (12.5 * mel[:, 7:10].astype(np.float64) - 50.0) / 10.0)
            f = formants(power.mean(axis=1))
            found.append((f.f1, f.f2))
        read[phoneme] = np.nanmedian(np.array(found), axis=0)
    assert read["i:"][0] < 400 and read["i:"][1] > 2000, read
    assert read["u:"][0] < 450 and 1200 < read["u:"][1] < 1800, read
    assert read["A:"][0] > 650 and read["A:"][1] < 1300, read


@pytest.mark.parametrize("level_dbfs", [-60.0, -30.0])
def test_lip_shape_is_neutral_in_silence_and_noise(level_dbfs: float) -> None:
    noise = (pink_noise(SAMPLE_RATE * 6, seed=2) * 10 ** (level_dbfs / 20)).astype(np.float32)
    silence = np.zeros(SAMPLE_RATE * 2, np.float32)
    assert np.all(np.array([f.mouth_wide for f in articulate(silence)]) == 0.0)
    assert np.abs([f.mouth_wide for f in articulate(noise)]).max() < 0.05


def steady_vowel(seconds: float) -> np.ndarray:
    """A glottal pulse train at 120 Hz through /a/ formant resonators (700, 1200, 2600 Hz)."""
    n = round(seconds * SAMPLE_RATE)
    source = np.zeros(n)
    source[:: SAMPLE_RATE // 120] = 1.0
    out = source
    for freq, bandwidth in ((700, 90), (1200, 110), (2600, 160)):
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        theta = 2 * np.pi * freq / SAMPLE_RATE
        out = lfilter([1.0 - r], [1.0, -2 * r * np.cos(theta), r * r], out)
    vowel: np.ndarray = (0.3 * out / np.abs(out).max()).astype(np.float32)
    return vowel


def test_steady_vowel_does_not_flicker_in_noise() -> None:
    silence = np.zeros(SAMPLE_RATE, np.float32)
    vowel = steady_vowel(2.5)
    audio = np.concatenate([silence, vowel, silence])
    noise = pink_noise(len(audio), seed=9) * np.sqrt(np.mean(vowel**2)) * 10 ** (-10 / 20)
    opening = mouth(articulate((audio + noise).astype(np.float32)))
    middle = opening[25 + 5 : 25 + 60]  # from onset + 0.2 s to the vowel's end - 0.3 s
    assert middle.mean() > 0.5
    assert middle.std() < 0.05
    assert np.abs(np.diff(middle)).max() < 0.1


# ---------------------------------------------------------------------------- contract


@needs_espeak
def test_chunking_does_not_change_the_lips(clips: dict[str, SpeechClip]) -> None:
    audio = clips["en"].audio[: SAMPLE_RATE * 6]
    runs = [articulate(audio, chunk) for chunk in (160, 592, SAMPLE_RATE)]
    rows = [
        [(f.index, f.upper_lip, f.lower_lip, f.mouth_open, f.mouth_wide) for f in r] for r in runs
    ]
    assert rows[0] == rows[1] == rows[2]


def test_deterministic_and_reset_closes_at_once() -> None:
    windows = np.random.default_rng(0).uniform(-4, 1, (60, 80, 16)).astype(np.float32)
    a, b = AudioArticulator(), AudioArticulator()
    assert [a.push(w) for w in windows] == [b.push(w) for w in windows]
    assert a.push(windows[0]).mouth_open > 0
    a.reset()
    rest = a.push(np.full((80, 16), -4.0, np.float32))
    assert (rest.mouth_open, rest.mouth_wide, rest.upper_lip, rest.lower_lip) == (0, 0, 0, 0)
    # reset_calibration forgets the channel too: the same input replays identically.
    a.reset_calibration()
    c = AudioArticulator()
    assert [a.push(w) for w in windows[:10]] == [c.push(w) for w in windows[:10]]


def test_outputs_stay_in_range() -> None:
    rng = np.random.default_rng(1)
    art = AudioArticulator()
    for _ in range(300):
        pose = art.push(rng.uniform(-4, 4, (80, 16)))
        assert 0.0 <= pose.mouth_open <= 1.0 and -1.0 <= pose.mouth_wide <= 1.0
        assert pose.upper_lip <= 0.0 <= pose.lower_lip
        assert pose.lower_lip - pose.upper_lip <= 0.41


@needs_espeak
def test_nominal_range_is_the_lower_lips_typical_range(clips: dict[str, SpeechClip]) -> None:
    for clip in clips.values():
        frames = articulate(clip.audio)
        lower = np.array([f.lower_lip for f in frames])[clip.speech_frames()]
        measured = np.percentile(lower, 95) - np.percentile(lower, 5)
        nominal = ArticulatorStage().nominal_range
        assert 0.5 * nominal < measured < 2.0 * nominal


def test_stage_contract() -> None:
    stage = ArticulatorStage()
    assert stage.delay_frames == 0 and stage.nominal_range > 0
    feature = FeatureFrame(
        index=7,
        audio=np.zeros(SAMPLES_PER_FRAME, np.float32),
        mel=np.full((80, 16), -4.0, np.float32),
    )
    (lip,) = stage.push(feature)
    assert lip.features is feature and lip.index == 7 and lip.expression is None
    assert stage.flush() == []
    stage.reset()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        AudioArticulator(dataclasses.replace(ArticulatorConfig(), attack=0.0))
    with pytest.raises(ValueError):
        AudioArticulator(dataclasses.replace(ArticulatorConfig(), columns=(8, 14)))
    with pytest.raises(ValueError):
        AudioArticulator().push(np.zeros((80, 15)))
    with pytest.raises(ValueError):
        AudioArticulator(dataclasses.replace(ArticulatorConfig(), voiced_level=0.0))
