"""The motion stages every path shares: audio chunks -> ``MotionFrame``.

Stage order: features -> lips -> silence -> motion. The lookahead (``pipeline.lookahead_ms``
offline; live sessions pass ``server.lookahead_ms`` as ``lookahead_ms``) is shared out to the
stages that can use it; each takes at most what it can use (silence: W//2 frames).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from msadtalker.timing import frames_from_ms
from streamer.config import Config
from streamer.stages.contract import Stage
from streamer.stages.features import FeatureStage
from streamer.stages.lips import ArticulatorStage
from streamer.stages.motion import MotionStage
from streamer.stages.silence import SilenceStage

# Builds one stream's full stage list (motion stages + render); called once per stream.
StageFactory = Callable[[], Sequence[Stage[Any, Any]]]


def lookahead_frames(config: Config, lookahead_ms: int | None = None) -> int:
    """Frames of lookahead to build with: ``lookahead_ms`` when the caller gives it (live
    sessions: ``server.lookahead_ms``), else ``pipeline.lookahead_ms`` (offline)."""
    return frames_from_ms(config.pipeline.lookahead_ms if lookahead_ms is None else lookahead_ms)


def build_motion_stages(
    config: Config, lips: Stage[Any, Any] | None = None, *, lookahead_ms: int | None = None
) -> list[Stage[Any, Any]]:
    """Stages from audio chunks to ``MotionFrame``s.

    ``lips``: the lip source; the default-path articulator unless the neural path supplies its
    lip keypoint stage (it must expose ``nominal_range`` for the silence range floor).
    ``lookahead_ms``: see ``lookahead_frames``.
    """
    lookahead = lookahead_frames(config, lookahead_ms)
    # The articulator reads only the frame's own mel rows: without lookahead it takes the
    # newest final rows (causal windows, one frame sooner) rather than SadTalker's centred
    # window, which the networks of the neural path need.
    if lips is None:
        features = FeatureStage(causal=lookahead == 0)
    else:
        features = FeatureStage(lookahead_frames=min(lookahead, 3))
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
        idle=config.idle,
    )
    return [features, lip_stage, silence, motion]
