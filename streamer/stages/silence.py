"""SilenceStage: LipFrame -> SilenceFrame (MSadTalker eqs 4-5, causal windowed form).

Delay: ``lookahead`` frames (at most W//2 = 2; 2 reproduces the paper's centred window).
"""

from __future__ import annotations

from collections import deque

from msadtalker.silence import CausalSilenceWeighter, SilenceConfig
from msadtalker.vad import VoiceActivity
from streamer.types import LipFrame, SilenceFrame


class SilenceStage:
    def __init__(
        self,
        config: SilenceConfig | None = None,
        lookahead: int = 2,
        range_floor: float = 0.0,
        fixed_range: tuple[tuple[float, float], tuple[float, float]] | None = None,
    ) -> None:
        self._weighter = CausalSilenceWeighter(config, lookahead, range_floor, fixed_range)
        self._pending: deque[LipFrame] = deque()
        cfg = config or SilenceConfig()
        # The optional second silence signal (silence.source = "vad" | "both").
        self._vad = VoiceActivity(cfg.vad_aggressiveness) if cfg.source != "lips" else None

    @property
    def delay_frames(self) -> int:
        return self._weighter.delay_frames

    def push(self, item: LipFrame) -> list[SilenceFrame]:
        self._pending.append(item)
        voiced = self._vad.voiced(item.features.audio) if self._vad is not None else None
        return self._attach(self._weighter.push(item.upper_lip, item.lower_lip, voiced))

    def flush(self) -> list[SilenceFrame]:
        return self._attach(self._weighter.flush())

    def reset(self) -> None:
        self._weighter.reset()
        if self._vad is not None:
            self._vad.reset()

    def _attach(self, decisions: list) -> list[SilenceFrame]:
        out = []
        for decision in decisions:
            lips = self._pending.popleft()
            out.append(SilenceFrame(lips=lips, silent=decision.silent, weight=decision.weight))
        return out
