"""``GET /avatar.jpg``: the avatar at rest, which the pages show before they connect.

Made by the pipeline itself, so it is right for any renderer: a few frames of silence through
a fresh stage list (after the pipeline's lookahead), the one with the eyes most open, as a
JPEG. Rendered once per server, off the event loop, on the first request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cv2
import numpy as np

from msadtalker.timing import SAMPLES_PER_FRAME
from streamer.assembly import StageFactory
from streamer.pipeline import Pipeline
from streamer.server.state import ServerState
from streamer.types import AudioChunk, VideoFrame

POSTER_FRAMES = 5  # frames of silence rendered for the poster (after the pipeline's lookahead)


async def poster_jpeg(state: ServerState) -> bytes:
    """The poster; every request waits for the one rendering (a failure raises to each)."""
    if state.poster is None:
        loop = asyncio.get_running_loop()
        state.poster = loop.run_in_executor(None, render_poster, state.stage_factory)
    return await asyncio.shield(state.poster)


def render_poster(stage_factory: StageFactory) -> bytes:
    stages = list(stage_factory())
    idle = getattr(stages[-1], "idle_picture", None) if stages else None
    if callable(idle):
        # A renderer that offers one (the neural path: its photo) may take minutes per frame
        # on a CPU; the pages would wait that long for their poster.
        return _jpeg(idle())
    pipeline: Pipeline[Any] = Pipeline(stages)
    silence = np.zeros((pipeline.delay_frames + POSTER_FRAMES) * SAMPLES_PER_FRAME, np.float32)
    frames = [f for f in pipeline.push(AudioChunk(silence, 0)) if isinstance(f, VideoFrame)]
    if not frames:
        raise ValueError("the stages make no pictures")
    rest = min(frames, key=lambda f: f.motion.blink)
    return _jpeg(rest.image)


def _jpeg(image: np.ndarray) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg)
