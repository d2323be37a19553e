"""The stages a live session runs: exactly offline render's (``build_motion_stages`` + the
render stage), built once per session from what is prepared once per process (the avatar
and its mesh renderer, which is stateless per frame and shared by every session)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from msadtalker.errors import ConfigError
from streamer.config import Config
from streamer.stage import Stage

StageFactory = Callable[[], Sequence[Stage[Any, Any]]]


def live_stage_factory(
    config: Config, avatar: Path | None = None, checkpoints: Path | None = None
) -> StageFactory:
    """Prepare the avatar now (errors surface at start-up); return one session's stages."""
    from msadtalker.avatar import default_avatar_path, prepare_avatar
    from msadtalker.mesh.renderer import MeshRenderer
    from streamer.build import build_motion_stages
    from streamer.stages.render import MeshRenderStage

    if checkpoints is not None or config.render.renderer == "neural":
        raise ConfigError(
            "the live server renders with the CPU mesh renderer; the neural renderer "
            "(--checkpoints / render.renderer = neural) is not wired into it yet"
        )
    size = config.render.size
    prepared = prepare_avatar(avatar or default_avatar_path(), size)
    renderer = MeshRenderer(prepared, size)

    def stages() -> list[Stage[Any, Any]]:
        return [*build_motion_stages(config), MeshRenderStage(renderer, config.render.mode)]

    return stages
