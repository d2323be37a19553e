"""``[broadcast]`` settings -> one encoder's settings."""

from __future__ import annotations

from msadtalker.timing import FPS
from streamer.broadcast.encoder import Container, EncoderSettings
from streamer.config import BroadcastConfig


def encoder_settings(config: BroadcastConfig, target: str, container: Container) -> EncoderSettings:
    return EncoderSettings(
        target=target,
        container=container,
        video_kbps=config.video_kbps,
        audio_kbps=config.audio_kbps,
        audio_rate=config.audio_rate,
        keyframe_frames=max(1, round(config.keyframe_s * FPS)),
        preset=config.preset,
        threads=config.encoder_threads,
    )
