"""Assemble the one pipeline from the config. Offline render, ``motion`` and the live server
all call ``build_motion_stages``; only what comes after the motion stage (a renderer or
nothing) and the source/sink/clock around the pipeline differ.

Stage order: features -> lips -> silence -> motion [-> render]. The lookahead knob
(``pipeline.lookahead_ms``) is shared out to the stages that can use it; each takes at most
what it can use (silence: W//2 frames).
"""

from __future__ import annotations

from typing import Any

from msadtalker.timing import frames_from_ms
from streamer.config import Config
from streamer.stage import Stage
from streamer.stages.features import FeatureStage
from streamer.stages.lips import ArticulatorStage
from streamer.stages.motion import MotionStage
from streamer.stages.silence import SilenceStage


def lookahead_frames(config: Config) -> int:
    return frames_from_ms(config.pipeline.lookahead_ms)


def build_motion_stages(config: Config, lips: Stage[Any, Any] | None = None) -> list[Stage[Any, Any]]:
    """Stages from audio chunks to ``MotionFrame``s.

    ``lips``: the lip source; the default-path articulator unless the neural path supplies its
    lip keypoint stage (it must expose ``nominal_range`` for the silence range floor).
    """
    lookahead = lookahead_frames(config)
    features = FeatureStage(lookahead_frames=0 if lips is None else min(lookahead, 3))
    lip_stage = lips if lips is not None else ArticulatorStage()
    nominal_range = float(getattr(lip_stage, "nominal_range", 0.0))
    silence = SilenceStage(
        config.silence,
        lookahead=lookahead,
        range_floor=config.silence.range_floor_frac * nominal_range,
    )
    motion = MotionStage(
        pose=config.pose,
        silence=config.silence,
        blink=config.blink,
        seed=config.pipeline.seed,
        still=config.render.still,
    )
    return [features, lip_stage, silence, motion]
