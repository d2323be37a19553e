"""The default path's stage factory: motion stages + the CPU mesh renderer (no checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msadtalker.avatar import prepare_avatar
from msadtalker.mesh.renderer import MeshRenderer
from streamer.assembly.motion import StageFactory, build_motion_stages
from streamer.config import Config
from streamer.stages.contract import Stage
from streamer.stages.render import MeshRenderStage


def mesh_factory(
    config: Config, photo: Path, face_index: int | None, lookahead_ms: int | None = None
) -> StageFactory:
    """Prepare the avatar and its renderer now; return one stream's stage list builder
    (``lookahead_ms``: see ``streamer.assembly.motion.lookahead_frames``)."""
    size = config.render.size
    prepared = prepare_avatar(photo, size, face_index)
    # Stateless per frame, so every session shares one renderer (and its per-avatar maps).
    renderer = MeshRenderer(prepared, size)

    def stages() -> list[Stage[Any, Any]]:
        motion = build_motion_stages(config, lookahead_ms=lookahead_ms)
        return [*motion, MeshRenderStage(renderer, config.render.mode)]

    return stages
