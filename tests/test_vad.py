"""The VAD as a second silence signal (silence.source = lips | vad | both)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import pytest
from live_fakes import FakeFeatureStage, FakeLipStage, speech_like

from msadtalker.silence import SilenceConfig
from msadtalker.timing import SAMPLES_PER_FRAME
from streamer.pipeline import Pipeline
from streamer.stages.contract import Stage
from streamer.stages.silence import SilenceStage
from streamer.types import AudioChunk, SilenceFrame

pytest.importorskip("webrtcvad")


def _silent_flags(
    audio: np.ndarray,
    source: Literal["lips", "vad", "both"],
    lips: Stage[Any, Any] | None = None,
) -> np.ndarray:
    config = dataclasses.replace(SilenceConfig(), source=source)
    stages: list[Stage[Any, Any]] = [
        FakeFeatureStage(),
        lips or FakeLipStage(),
        SilenceStage(config, lookahead=2),
    ]
    pipeline: Pipeline[SilenceFrame] = Pipeline(stages)
    frames = list(pipeline.run([AudioChunk(audio, 0)]))
    return np.array([f.silent for f in frames])


def test_vad_hears_voice_and_not_silence() -> None:
    from msadtalker.vad import VoiceActivity

    vad = VoiceActivity(2)
    audio = speech_like([(0.5, 1.5)], 2.0)
    calls = [vad.voiced(audio[i : i + SAMPLES_PER_FRAME]) for i in range(0, 32000, 640)]
    assert sum(calls[15:35]) >= 18  # the voiced second
    # The silences, once the VAD has settled (~0.2 s) and past its hangover (~0.25 s).
    assert sum(calls[5:12]) + sum(calls[45:]) == 0


class _NoisyLips(FakeLipStage):
    """A lip source fooled by noise: its lips twitch at random, whatever the audio."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)

    def push(self, item):  # type: ignore[no-untyped-def]
        (frame,) = super().push(item)
        jitter = float(self._rng.uniform(-0.3, 0.3))
        return [
            dataclasses.replace(
                frame, upper_lip=frame.upper_lip + jitter, lower_lip=frame.lower_lip - jitter
            )
        ]


def test_sources_combine_as_documented() -> None:
    audio = speech_like([(0.5, 1.5)], 2.0)
    speech = np.zeros(50, dtype=bool)
    speech[13:37] = True
    quiet = np.zeros(50, dtype=bool)  # silence, past the VAD's start-up and hangover
    quiet[5:12] = quiet[45:] = True
    lips = _silent_flags(audio, "lips", _NoisyLips())
    vad = _silent_flags(audio, "vad", _NoisyLips())
    both = _silent_flags(audio, "both", _NoisyLips())
    # Twitching lips look like speech everywhere; the VAD is not fooled.
    assert lips[quiet].mean() < 0.5
    assert vad[quiet].all() and vad[speech].mean() < 0.2
    # "both": speech only where the lips move AND a voice is heard.
    np.testing.assert_array_equal(both, lips | vad)


def test_bad_aggressiveness_is_a_config_error() -> None:
    from msadtalker.errors import ConfigError
    from streamer.config import load_config

    with pytest.raises(ConfigError, match="vad_aggressiveness"):
        load_config(overrides={"silence.vad_aggressiveness": 7})
