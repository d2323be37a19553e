"""ArticulatorStage: FeatureFrame -> LipFrame (default-path lip signal, no neural network).

Input: ``FeatureFrame`` (its (80, 16) mel window; only the current frame's columns 6..9 are
read). Output: one ``LipFrame`` per input frame with ``mouth_open`` [0, 1], ``mouth_wide``
[-1, 1] and ``upper_lip`` / ``lower_lip`` (vertical displacement from rest in mouth widths,
positive downward), ``expression`` None. See ``msadtalker.articulator``.

Delay: 0 frames (the articulator uses no lookahead). ``reset`` closes the mouth at once and
keeps the level calibration (noise floor and speech peak of the input channel).
``nominal_range``: the lower lip's typical peak-to-peak range during speech, for the silence
weighter's range floor.
"""

from __future__ import annotations

from msadtalker.articulator import ArticulatorConfig, AudioArticulator
from streamer.types import FeatureFrame, LipFrame


class ArticulatorStage:
    def __init__(self, config: ArticulatorConfig | None = None) -> None:
        self._articulator = AudioArticulator(config)

    @property
    def delay_frames(self) -> int:
        return self._articulator.delay_frames

    @property
    def nominal_range(self) -> float:
        return self._articulator.nominal_range

    def push(self, item: FeatureFrame) -> list[LipFrame]:
        pose = self._articulator.push(item.mel)
        return [
            LipFrame(
                features=item,
                upper_lip=pose.upper_lip,
                lower_lip=pose.lower_lip,
                mouth_open=pose.mouth_open,
                mouth_wide=pose.mouth_wide,
            )
        ]

    def flush(self) -> list[LipFrame]:
        return []

    def reset(self) -> None:
        self._articulator.reset()
