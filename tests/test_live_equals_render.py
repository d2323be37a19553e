"""Live == offline with the real pipeline: the same WAV through a live session (virtual clock,
mic in time, no drops) and through the offline command gives the same trace, byte for byte.

``msadtalker motion`` for the motion stages; ``msadtalker render`` for the whole pipeline once
the render command and stage are in place. (``test_session.
test_live_session_equals_offline_render`` checks the same property with the stand-in stages.)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from live_fakes import VirtualMic, speech_like

from msadtalker.timing import SAMPLE_RATE
from streamer.clock import VirtualClock
from streamer.config import Config, ServerConfig
from streamer.io.trace import TraceWriter
from streamer.session import LiveSession

pytestmark = pytest.mark.slow


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


MOTION_STAGES = ("streamer.stages.features", "streamer.stages.lips", "streamer.io.audio_source")


def _render_writes_traces() -> bool:
    if not _have(*MOTION_STAGES, "streamer.stages.render", "streamer.commands.render"):
        return False
    from streamer.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and "render" in action.choices:
            render = action.choices["render"]
            return any("--trace" in a.option_strings for a in render._actions)
    return False


def _speech_wav(tmp_path: Path) -> Path:
    wav = tmp_path / "speech.wav"
    audio = speech_like([(0.4, 1.6), (2.0, 2.9)], 3.37, seed=5)
    sf.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
    return wav


async def _live_trace(stages: list, wav: Path, path: Path, renders: bool) -> LiveSession:
    """``wav`` through a live session on a virtual clock, the mic delivering in time."""
    audio_source = importlib.import_module("streamer.io.audio_source")
    server = ServerConfig(jitter_ms=20)
    clock = VirtualClock()
    session = LiveSession(stages, clock, server, sinks=(TraceWriter(path),), renders=renders)
    audio = np.concatenate([chunk.samples for chunk in audio_source.AudioFileSource(wav)])
    session.start()
    mic = VirtualMic(session, clock, audio)
    await mic.run(len(audio) / SAMPLE_RATE + 0.02)
    session.end_input()
    while not session.finished.is_set():
        await mic.run(0.04)
    await session.aclose()
    return session


@pytest.mark.skipif(not _have(*MOTION_STAGES), reason="the real feature / lip stages are not here")
async def test_live_session_equals_msadtalker_motion(tmp_path: Path) -> None:
    from streamer.build import build_motion_stages
    from streamer.cli import main

    wav = _speech_wav(tmp_path)
    offline = tmp_path / "motion.csv"
    assert main(["motion", "--audio", str(wav), "--trace", str(offline)]) == 0
    live = tmp_path / "live.csv"
    session = await _live_trace(build_motion_stages(Config()), wav, live, renders=False)
    assert session.ingest.stats.samples_missing == 0
    assert len(live.read_text().splitlines()) > 50
    assert live.read_text() == offline.read_text()


@pytest.mark.skipif(
    not _render_writes_traces(), reason="`msadtalker render --trace` is not here yet"
)
async def test_live_session_equals_msadtalker_render(tmp_path: Path) -> None:
    from streamer.cli import main
    from streamer.live import live_stage_factory

    wav = _speech_wav(tmp_path)
    offline = tmp_path / "render.csv"
    argv = [
        "render",
        "--audio",
        str(wav),
        "--out",
        str(tmp_path / "out.mp4"),
        "--trace",
        str(offline),
    ]
    assert main(argv) == 0
    live = tmp_path / "live.csv"
    stages = list(live_stage_factory(Config())())
    session = await _live_trace(stages, wav, live, renders=True)
    assert session.ingest.stats.samples_missing == 0 and session.stats.renders_skipped == 0
    assert live.read_text() == offline.read_text()
