"""Assemble the one pipeline from the config.

Offline render, ``motion``, the live server and the kiosk all build their stages here; only
the source, the sinks and the clock around the pipeline differ. The motion stages
(``streamer.assembly.motion``) are shared; the two renderers' factories sit side by side:
``streamer.assembly.mesh`` (default, CPU) and ``streamer.assembly.neural`` (checkpoints; imported
only when chosen, because it needs torch).

``stage_factory`` prepares what is expensive and stateless once per process (the avatar and its
renderer) and returns a callable that builds one stream's stages: a live server calls it per
session, offline render once.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Literal

from msadtalker.errors import ConfigError
from streamer.assembly.motion import StageFactory, build_motion_stages, lookahead_frames
from streamer.config import Config

__all__ = [
    "StageFactory",
    "build_motion_stages",
    "lookahead_frames",
    "neural_module",
    "resolve_renderer",
    "stage_factory",
]

Renderer = Literal["mesh", "neural"]


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
    *,
    lookahead_ms: int | None = None,
) -> StageFactory:
    """Prepare the avatar and renderer now (input errors surface here, before any stream);
    return a callable that builds one stream's full stage list (motion stages + render).

    ``lookahead_ms``: the lookahead to build with; ``None`` = ``pipeline.lookahead_ms`` (the
    offline one). Live sessions pass ``server.lookahead_ms``."""
    from msadtalker.avatar import default_avatar_path

    photo = avatar or default_avatar_path()
    if resolve_renderer(config, checkpoints) == "neural":
        factory: StageFactory = neural_module().neural_factory(
            config, photo, checkpoints, face_index, lookahead_ms
        )
        return factory
    from streamer.assembly.mesh import mesh_factory

    return mesh_factory(config, photo, face_index, lookahead_ms)


def neural_module() -> ModuleType:
    """``streamer.assembly.neural``, imported on demand: the neural path needs torch, which the
    mesh path never loads; without it, one clear error."""
    try:
        return importlib.import_module("streamer.assembly.neural")
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "safetensors"):
            raise
        raise ConfigError(
            f"the neural renderer needs the {exc.name} package (pip install 'msadtalker[neural]')"
        ) from None
