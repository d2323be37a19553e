"""Live == offline with the real pipeline: the same WAV through a live session (virtual clock,
mic in time, no drops) and through the offline command gives the same trace, byte for byte.

``msadtalker motion`` for the motion stages, ``msadtalker render`` for the whole pipeline
(motion stages + renderer), whose mp4 must also hold the same pictures. (``test_session.
test_live_session_equals_offline_render`` checks the same property with the stand-in stages.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
from live_fakes import VirtualMic, speech_like

from msadtalker.timing import SAMPLE_RATE
from streamer.clock import VirtualClock
from streamer.config import Config, ServerConfig
from streamer.io.audio_source import AudioFileSource
from streamer.io.trace import TraceWriter
from streamer.pipeline import Pipeline
from streamer.session import LiveSession
from streamer.types import VideoFrame

pytestmark = pytest.mark.slow


def _speech_wav(tmp_path: Path) -> Path:
    wav = tmp_path / "speech.wav"
    audio = speech_like([(0.4, 1.6), (2.0, 2.9)], 3.37, seed=5)
    sf.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
    return wav


async def _live_trace(
    stages: list[Any],
    wav: Path,
    path: Path,
    renders: bool,
    pictures: list[np.ndarray] | None = None,
) -> LiveSession:
    """``wav`` through a live session on a virtual clock, the mic delivering in time; the
    published pictures go to ``pictures``."""
    server = ServerConfig(jitter_ms=20)
    clock = VirtualClock()
    session = LiveSession(stages, clock, server, sinks=(TraceWriter(path),), renders=renders)
    audio = np.concatenate([chunk.samples for chunk in AudioFileSource(wav)])
    if pictures is not None:
        sub = session.subscribe("pictures", maxsize=100_000)

        async def collect() -> None:
            while (frame := await sub.get()) is not None:
                pictures.append(frame.image)

        collector = asyncio.create_task(collect())
    session.start()
    mic = VirtualMic(session, clock, audio)
    await mic.run(len(audio) / SAMPLE_RATE + 0.02)
    session.end_input()
    while not session.finished.is_set():
        await mic.run(0.04)
    await session.aclose()
    if pictures is not None:
        await collector
    return session


async def test_live_session_equals_msadtalker_motion(tmp_path: Path) -> None:
    from streamer.assembly import build_motion_stages
    from streamer.cli import main

    wav = _speech_wav(tmp_path)
    offline = tmp_path / "motion.csv"
    assert main(["motion", "--audio", str(wav), "--trace", str(offline)]) == 0
    live = tmp_path / "live.csv"
    session = await _live_trace(build_motion_stages(Config()), wav, live, renders=False)
    assert session.ingest.stats.samples_missing == 0
    assert len(live.read_text().splitlines()) > 50
    assert live.read_text() == offline.read_text()


async def test_live_session_equals_msadtalker_render(tmp_path: Path) -> None:
    from streamer.assembly import stage_factory
    from streamer.cli import main

    wav = _speech_wav(tmp_path)
    offline = tmp_path / "render.csv"
    mp4 = tmp_path / "out.mp4"
    argv = ["render", "--audio", str(wav), "--out", str(mp4), "--trace", str(offline)]
    assert main(argv) == 0
    live = tmp_path / "live.csv"
    factory = stage_factory(Config())
    pictures: list[np.ndarray] = []
    session = await _live_trace(list(factory()), wav, live, renders=True, pictures=pictures)
    assert session.ingest.stats.samples_missing == 0 and session.stats.renders_skipped == 0
    assert live.read_text() == offline.read_text()
    # The pictures too: pixel for pixel those of the same stages run offline, and (through
    # H.264) those of render's mp4.
    chunks = AudioFileSource(wav)
    same_stages: Pipeline[VideoFrame] = Pipeline(list(factory()))
    reference = [frame.image for frame in same_stages.run(chunks)]
    assert len(pictures) == len(reference) == len(live.read_text().splitlines()) - 1
    assert all(np.array_equal(a, b) for a, b in zip(pictures, reference, strict=True))
    with av.open(str(mp4)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(pictures)
    errors = [np.abs(a.astype(np.int16) - b).mean() for a, b in zip(pictures, decoded, strict=True)]
    assert max(errors) < 4.0, max(errors)
