"""Avatar preparation: photo -> face crop, 468 dense landmarks with depth, disk cache.

Public API: ``prepare_avatar``, ``PreparedAvatar``, ``load_image``, ``default_avatar_path``.
Runs on CPU with the MediaPipe models shipped in ``models/`` (no download, no GPU).
"""

from __future__ import annotations

from pathlib import Path

from msadtalker.avatar.image_io import load_image
from msadtalker.avatar.prepare import PreparedAvatar, prepare_avatar

__all__ = ["PreparedAvatar", "default_avatar_path", "load_image", "prepare_avatar"]


def default_avatar_path() -> Path:
    """The bundled public-domain portrait (NASA astronaut photo, see assets/README.md)."""
    return Path(__file__).resolve().parent.parent / "assets" / "default_avatar.png"
