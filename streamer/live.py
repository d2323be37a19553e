"""The stages a live session runs: exactly offline render's, from ``streamer.build``."""

from __future__ import annotations

from pathlib import Path

from streamer.build import StageFactory, stage_factory
from streamer.config import Config

__all__ = ["StageFactory", "live_stage_factory"]


def live_stage_factory(
    config: Config,
    avatar: Path | None = None,
    checkpoints: Path | None = None,
    face_index: int | None = None,
) -> StageFactory:
    """Prepare the avatar now (errors surface at start-up); return one session's stages."""
    return stage_factory(config, avatar, checkpoints, face_index)
