"""The key test of the design: one call or chunk by chunk, the motion trace is identical.

The bundled sample speech (plus faint pink noise, so that nothing is exactly zero) goes through
``build_motion_stages`` once as a single chunk and again in chunks of every awkward size
(1 and 7 samples, 10/20/37 ms, one frame +- 1 sample, 1 s, random sizes), for the lookaheads
the CLI offers. Every field of every MotionFrame must be bit-identical, and so must the trace
CSV. Also: frame indices and timestamps, and the declared delay.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from msadtalker.audio import load_audio
from msadtalker.timing import FPS, SAMPLES_PER_FRAME
from streamer.assembly import build_motion_stages
from streamer.config import load_config
from streamer.io.trace import COLUMNS, trace_row
from streamer.pipeline import Pipeline
from streamer.types import AudioChunk, MotionFrame

ASSETS = Path(__file__).resolve().parents[1] / "msadtalker" / "assets"


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """6 s of the bundled English sample (speech and pauses), with -60 dB pink-ish noise."""
    x = load_audio(ASSETS / "sample_speech_en.wav", warn=False)[: 6 * 16000 + 333]
    rng = np.random.default_rng(0)
    noise = np.cumsum(rng.standard_normal(len(x))) * 1e-5
    noisy: np.ndarray = (x + (noise - noise.mean()).astype(np.float32)).astype(np.float32)
    return noisy


def chunks(x: np.ndarray, sizes: Iterator[int]) -> Iterator[AudioChunk]:
    start = 0
    while start < len(x):
        size = next(sizes)
        yield AudioChunk(samples=x[start : start + size], start=start)
        start += size


def fixed(size: int) -> Iterator[int]:
    while True:
        yield size


def random_sizes(seed: int) -> Iterator[int]:
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(1, 4000))


def run(lookahead_ms: int, source: Iterator[AudioChunk] | list[AudioChunk]) -> list[MotionFrame]:
    config = load_config(overrides={"pipeline.lookahead_ms": lookahead_ms, "pipeline.seed": 7})
    return list(Pipeline(build_motion_stages(config)).run(source))


def fields(frame: MotionFrame) -> tuple[object, ...]:
    lips = frame.lips
    return (
        frame.index,
        frame.pose,
        frame.pose_raw,
        frame.mouth_open,
        frame.blink,
        frame.silence.silent,
        frame.silence.weight,
        lips.upper_lip,
        lips.lower_lip,
        lips.mouth_open,
        lips.mouth_wide,
        frame.audio.tobytes(),
        lips.features.mel.tobytes(),
    )


def csv_text(frames: list[MotionFrame]) -> str:
    out = io.StringIO()
    out.write(",".join(COLUMNS) + "\n")
    for frame in frames:
        out.write(",".join(trace_row(frame)) + "\n")
    return out.getvalue()


@pytest.fixture(scope="module")
def one_call(audio: np.ndarray) -> dict[int, list[MotionFrame]]:
    return {ms: run(ms, [AudioChunk(samples=audio, start=0)]) for ms in (0, 40, 80)}


SIZES = {
    "7 samples": lambda: fixed(7),
    "10 ms": lambda: fixed(160),
    "20 ms": lambda: fixed(320),
    "37 ms": lambda: fixed(592),
    "frame-1": lambda: fixed(SAMPLES_PER_FRAME - 1),
    "frame+1": lambda: fixed(SAMPLES_PER_FRAME + 1),
    "1 s": lambda: fixed(16000),
    "random": lambda: random_sizes(3),
}


@pytest.mark.parametrize("lookahead_ms", [0, 40, 80])
@pytest.mark.parametrize("kind", list(SIZES))
def test_chunked_equals_one_call(
    audio: np.ndarray, one_call: dict[int, list[MotionFrame]], lookahead_ms: int, kind: str
) -> None:
    whole = one_call[lookahead_ms]
    chunked = run(lookahead_ms, chunks(audio, SIZES[kind]()))
    assert len(chunked) == len(whole) == len(audio) // SAMPLES_PER_FRAME
    for a, b in zip(whole, chunked, strict=True):
        assert fields(a) == fields(b), f"frame {a.index} differs"
    assert csv_text(chunked) == csv_text(whole)


def test_single_sample_chunks_equal_one_call(
    audio: np.ndarray, one_call: dict[int, list[MotionFrame]]
) -> None:
    x = audio[: 2 * 16000]
    chunked = run(80, chunks(x, fixed(1)))
    whole = run(80, [AudioChunk(samples=x, start=0)])
    assert [fields(f) for f in chunked] == [fields(f) for f in whole]
    # The first 2 s of the long run are the same frames too (nothing looks past the lookahead),
    # except the last few, which the short run ended with the clip-end rule.
    n = len(whole) - 3
    assert [fields(f) for f in whole[:n]] == [fields(f) for f in one_call[80][:n]]


def test_frames_are_indexed_and_timed(one_call: dict[int, list[MotionFrame]]) -> None:
    frames = one_call[80]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.time_s for f in frames] == [i / FPS for i in range(len(frames))]


def test_lookahead_changes_the_weights_not_the_pose_generator(
    one_call: dict[int, list[MotionFrame]],
) -> None:
    """Different lookaheads are different pipelines (the parametrisation is live)."""
    silent0 = [f.silence.weight for f in one_call[0]]
    silent80 = [f.silence.weight for f in one_call[80]]
    assert silent0 != silent80
    # The pose generator does not depend on the audio path at all.
    assert [f.pose_raw for f in one_call[0]] == [f.pose_raw for f in one_call[80]]


@pytest.mark.parametrize("lookahead_ms", [0, 40, 80])
def test_declared_delay_is_kept(audio: np.ndarray, lookahead_ms: int) -> None:
    """Frame i comes out once the audio of frame i + delay is in (20 ms chunks)."""
    config = load_config(overrides={"pipeline.lookahead_ms": lookahead_ms})
    pipeline: Pipeline[MotionFrame] = Pipeline(build_motion_stages(config))
    x = audio[: 3 * 16000]
    waits = []
    for chunk in chunks(x, fixed(320)):
        for frame in pipeline.push(chunk):
            waits.append(chunk.end // SAMPLES_PER_FRAME - (frame.index + 1))
    assert max(waits) == pipeline.delay_frames
    assert min(waits) >= 0
    # At lookahead 0 the mesh path reads causal feature windows (no frame of delay); with a
    # lookahead the centred windows come back (one frame) plus the silence lookahead.
    assert pipeline.delay_frames == {0: 0, 40: 2, 80: 3}[lookahead_ms]
