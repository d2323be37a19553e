"""Assemble the one pipeline from the config.

Offline render, ``motion``, the live server and the kiosk all build their stages here; only
the source, the sinks and the clock around the pipeline differ.

Stage order: features -> lips -> silence -> motion [-> render]. The lookahead knob
(``pipeline.lookahead_ms``) is shared out to the stages that can use it; each takes at most
what it can use (silence: W//2 frames).

``stage_factory`` prepares what is expensive and stateless once per process (the avatar and its
renderer) and returns a callable that builds one stream's stages: a live server calls it per
session, offline render once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from msadtalker.errors import ConfigError
from msadtalker.timing import frames_from_ms
from streamer.config import Config
from streamer.stage import Stage
from streamer.stages.features import FeatureStage
from streamer.stages.lips import ArticulatorStage
from streamer.stages.motion import MotionStage
from streamer.stages.silence import SilenceStage

StageFactory = Callable[[], Sequence[Stage[Any, Any]]]
Renderer = Literal["mesh", "neural"]


def lookahead_frames(config: Config) -> int:
    return frames_from_ms(config.pipeline.lookahead_ms)


def build_motion_stages(
    config: Config, lips: Stage[Any, Any] | None = None
) -> list[Stage[Any, Any]]:
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


def resolve_renderer(config: Config, checkpoints: Path | None) -> Renderer:
    """``render.renderer``; ``auto`` = neural when checkpoints are given, else the mesh."""
    choice = config.render.renderer
    if choice == "auto":
        return "neural" if checkpoints is not None else "mesh"
    return choice


def stage_factory(
    config: Config,
    avatar: Path | None = None,
    checkpoints: Path | None = None,
    face_index: int | None = None,
) -> StageFactory:
    """Prepare the avatar and renderer now (input errors surface here, before any stream);
    return a callable that builds one stream's full stage list (motion stages + render)."""
    from msadtalker.avatar import default_avatar_path

    photo = avatar or default_avatar_path()
    if resolve_renderer(config, checkpoints) == "neural":
        return _neural_factory(config, photo, checkpoints, face_index)
    return _mesh_factory(config, photo, face_index)


def _mesh_factory(config: Config, photo: Path, face_index: int | None) -> StageFactory:
    from msadtalker.avatar import prepare_avatar
    from msadtalker.mesh.renderer import MeshRenderer
    from streamer.stages.render import MeshRenderStage

    size = config.render.size
    prepared = prepare_avatar(photo, size, face_index)
    # Stateless per frame, so every session shares one renderer (and its per-avatar maps).
    renderer = MeshRenderer(prepared, size)

    def stages() -> list[Stage[Any, Any]]:
        return [*build_motion_stages(config), MeshRenderStage(renderer, config.render.mode)]

    return stages


def _neural_factory(
    config: Config, photo: Path, checkpoints: Path | None, face_index: int | None
) -> StageFactory:
    factory: StageFactory = neural_module().neural_factory(config, photo, checkpoints, face_index)
    return factory


def neural_module() -> ModuleType:
    """``streamer.neural``, imported on demand: the neural path needs torch, which the mesh
    path never loads; without it, one clear error."""
    try:
        return importlib.import_module("streamer.neural")
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "safetensors"):
            raise
        raise ConfigError(
            f"the neural renderer needs the {exc.name} package (pip install 'msadtalker[neural]')"
        ) from None
