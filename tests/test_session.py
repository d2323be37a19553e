"""LiveSession on a virtual clock: pacing, stalls, barge-in, the drop policy, live == offline."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_fakes import (
    FakeRenderStage,
    SlowRenderStage,
    VirtualMic,
    fake_stages,
    mouth_darkness,
    speech_like,
)

from msadtalker.blink import BlinkConfig
from streamer.clock import VirtualClock
from streamer.config import Config, ServerConfig
from streamer.fanout import Subscription
from streamer.io.trace import TraceWriter
from streamer.offline import run_offline
from streamer.pipeline import Pipeline
from streamer.session import LiveSession
from streamer.types import AudioChunk, VideoFrame

SERVER = ServerConfig(jitter_ms=20, queue_frames=4, behind_frames=2)


def _session(
    config: Config | None = None, server: ServerConfig = SERVER, sinks: tuple[Any, ...] = ()
) -> tuple[LiveSession, VirtualClock]:
    clock = VirtualClock()
    session = LiveSession(fake_stages(config or Config()), clock, server, sinks=sinks)
    return session, clock


def _drain_queue(sub: Subscription[VideoFrame]) -> list[VideoFrame]:
    out = []
    while len(sub):
        out.append(sub._items.popleft())
    return out


async def test_one_frame_per_tick_paced_by_the_clock() -> None:
    session, clock = _session()
    sub = session.subscribe("all", maxsize=1000)
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.3, 1.5)], 2.0))
    await mic.settle()
    assert session.stats.ticks == 0  # nothing happens until time moves
    await mic.run(2.0)
    # The mic delivers in time, so frame k is made as soon as its audio is complete, at
    # (k + 1) * 40 ms: 50 frames by t = 2 s, never one early.
    assert session.stats.ticks == 50 and session.stats.late_ticks == 0
    frames = _drain_queue(sub)
    assert len(frames) == 50 - session.delay_frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert session.ingest.stats.samples_missing == 0
    await session.aclose()


async def test_without_audio_frames_come_at_their_deadlines() -> None:
    session, clock = _session()
    session.start()
    mic = VirtualMic(session, clock, None)
    await mic.run(2.0)
    # No mic at all: frame k waits for its audio until (k + 1) * 40 ms + 20 ms jitter.
    assert session.stats.ticks == 49
    await mic.run(0.02)
    assert session.stats.ticks == 50
    await session.aclose()


async def test_a_mic_faster_than_real_time_cannot_make_frames_early() -> None:
    session, clock = _session()
    session.start()
    audio = speech_like([(0.0, 4.0)], 4.0)
    for step in range(50):  # 40 ms of audio every 20 ms, for 1 s
        await clock.advance(0.02)
        session.feed(audio[step * 640 : (step + 1) * 640])
        for _ in range(5):
            await asyncio.sleep(0)
    await session.wait_ticks(24)
    for _ in range(20):
        await asyncio.sleep(0.001)
    assert session.stats.ticks == 25  # frame k never before (k + 1) * 40 ms
    await session.aclose()


async def test_stalled_mic_keeps_video_going_and_the_avatar_idles() -> None:
    config = Config(blink=BlinkConfig(rate_per_min=60.0, min_interval_s=0.5))
    session, clock = _session(config)
    sub = session.subscribe("all", maxsize=1000)
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.0, 3.0)], 3.0))
    await mic.run(1.0)
    speaking = _drain_queue(sub)
    assert max(f.motion.mouth_open for f in speaking) > 0.3
    mic.stalled = True  # no packets at all from here on
    await mic.run(3.0)
    idle = _drain_queue(sub)
    assert len(speaking) + len(idle) == session.stats.ticks - session.delay_frames
    assert session.ingest.stats.samples_missing > 2.5 * 16000
    tail = idle[-25:]  # the last second: at rest, still blinking
    assert all(f.motion.silence.weight == 0.0 for f in tail)
    assert all(f.motion.pose.yaw == 0.0 and f.motion.pose.pitch == 0.0 for f in tail)
    assert max(f.motion.mouth_open for f in tail) < 0.05
    assert max(f.motion.blink for f in idle) > 0.5
    await session.aclose()


async def test_interrupt_returns_the_avatar_to_rest_on_the_next_frame() -> None:
    session, clock = _session()
    sub = session.subscribe("all", maxsize=8)
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.0, 4.0)], 4.0))
    await mic.run(1.5)
    before = _drain_queue(sub)
    assert before[-1].motion.mouth_open > 0.2 and before[-1].motion.silence.weight > 0.5
    await mic.run(0.02)  # one frame queued, not yet taken by the track
    ticks = session.stats.ticks
    session.interrupt()
    assert len(sub) == 0  # queued speech frames are gone
    await mic.run(0.04)
    assert session.stats.ticks == ticks + 1
    (first,) = _drain_queue(sub)
    assert first.motion.silence.weight == 0.0
    assert (first.motion.pose.pitch, first.motion.pose.yaw, first.motion.pose.roll) == (0, 0, 0)
    assert first.motion.mouth_open == 0.0
    # Speech that keeps coming after the barge-in animates the avatar again.
    await mic.run(1.0)
    assert max(f.motion.mouth_open for f in _drain_queue(sub)) > 0.2
    assert session.stats.interrupts == 1
    await session.aclose()


async def test_falling_behind_skips_renders_but_not_motion() -> None:
    clock = VirtualClock()
    stages = fake_stages()
    render = stages[-1]
    assert isinstance(render, FakeRenderStage)
    session = LiveSession(stages, clock, SERVER)
    sub = session.subscribe("all", maxsize=1000)
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.0, 3.0)], 3.0))
    await mic.run(1.0)
    # The process stalls for half a second (as if one frame took 500 ms to render).
    await clock.advance(0.5)
    await mic.settle()
    await mic.run(1.0)
    frames = _drain_queue(sub)
    skipped = session.stats.renders_skipped
    # ~12 frames were due during the stall; those more than 2 frames late were not rendered.
    assert 8 <= skipped <= 12
    assert [f.index for f in frames] == list(range(len(frames)))  # motion for every frame
    assert render.pushed == len(frames) - skipped
    repeats = sum(frames[i].image is frames[i - 1].image for i in range(1, len(frames)))
    assert repeats == skipped
    assert session.snapshot()["dropped_frames"] == skipped
    await session.aclose()


async def test_a_renderer_five_times_slower_than_real_time_never_stalls_the_video() -> None:
    """Each picture takes 200 ms (of session time) to render: every frame is still published
    by its deadline, with the last finished picture when its own is not ready
    (counted), the avatar keeps changing at the renderer's pace, and a barge-in shows the
    avatar at rest on the next frame."""
    clock = VirtualClock()
    stages = fake_stages()
    slow = SlowRenderStage(clock, cost_s=0.2)
    stages[-1] = slow
    session = LiveSession(stages, clock, SERVER)
    sub = session.subscribe("video", maxsize=4)
    published: list[tuple[float, VideoFrame]] = []

    async def read() -> None:
        while (frame := await sub.get()) is not None:
            published.append((clock.now(), frame))

    reader = asyncio.create_task(read())
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.2, 4.0)], 4.0))
    try:
        await mic.run_past_a_slow_renderer(2.0, slow)
        speaking = published[-1][1]
        session.interrupt()
        interrupted_at = len(published)
        await mic.run_past_a_slow_renderer(1.0, slow)
    finally:
        slow.unblock()
    await session.aclose()
    await reader

    delay = session.delay_frames
    frames = [f for _, f in published]
    assert [f.index for f in frames[:interrupted_at]] == list(range(interrupted_at))
    # No frame waited for the renderer past its deadline (behind_frames after its due time,
    # + one 20 ms step of the test's clock), except the very first (nothing to show before
    # it: it waits for its own picture) and the frames that came due meanwhile.
    held = published[0][0]
    allowed = SERVER.behind_frames * 0.04 + 0.02 + 1e-9
    late = [
        frame.index
        for t, frame in published
        if t != held and t > session.due_time(frame.index + delay) + allowed
    ]
    assert not late
    assert sum(t == held for t, _ in published) <= 0.2 / 0.04 + 2
    own = [slow.rendered_for.get(id(f.image)) == f.index for f in frames]
    assert own[0]
    # The barge-in: the next frame is at rest and so is its picture (its own, or the last
    # one rendered at rest), never the speaking picture of before.
    assert speaking.motion.mouth_open > 0.2
    first_after = frames[interrupted_at]
    assert first_after.motion.silence.weight == 0.0 and first_after.motion.mouth_open == 0.0
    shown_for = slow.rendered_for[id(first_after.image)]
    shown = next(f for f in frames if f.index == shown_for)
    assert shown.motion.silence.weight == 0.0 and shown.motion.mouth_open <= 0.02
    assert mouth_darkness(first_after.image) < 0.1 < mouth_darkness(speaking.image)
    # 3 s, a render every 200-240 ms (the next one starts with the first tick after one ends):
    # 12-15 pictures for ~75 frames. A render takes longer than a frame may wait, so only the
    # first frame shows its own picture; every other frame shows the last finished one
    # (counted), and every render was late for its own frame.
    stats = session.snapshot()
    assert stats["renders_skipped"] == own.count(False) + session.stats.purged_on_interrupt
    assert own.count(True) == 1
    assert 3.0 / 0.24 - 3 <= stats["frames_rendered"] <= 3.0 / 0.2 + 2
    assert stats["renders_late"] >= stats["frames_rendered"] - 3
    assert stats["dropped_frames"] >= stats["renders_skipped"]
    # The picture changes at the renderer's own rate: every picture is shown but the one
    # thrown away at the barge-in and the ones still to be shown at the end.
    distinct = len({id(f.image) for f in frames})
    assert distinct >= max(8, stats["frames_rendered"] - 4)
    assert sub.dropped == 0  # the reader kept up: nothing piled up


async def test_a_subscriber_that_never_reads_stays_bounded_and_harms_no_one() -> None:
    session, clock = _session()
    stuck = session.subscribe("stuck", maxsize=4)
    reader = session.subscribe("reader", maxsize=4)
    got: list[int] = []

    async def read() -> None:
        while (frame := await reader.get()) is not None:
            got.append(frame.index)

    task = asyncio.create_task(read())
    session.start()
    await VirtualMic(session, clock, speech_like([(0.0, 2.0)], 2.0)).run(2.0)
    assert len(stuck) == 4
    assert stuck.dropped == session.stats.frames_out - 4
    assert got == list(range(session.stats.frames_out)) and reader.dropped == 0
    assert session.snapshot()["subscriber_drops"] == stuck.dropped
    await session.aclose()
    await task  # the reader sees the end of the stream
    assert await stuck.get() is not None  # what was queued is still there ...
    assert _drain_queue(stuck) and await stuck.get() is None  # ... then the end


async def test_drain_flushes_the_pipeline_into_the_sinks(tmp_path: Path) -> None:
    trace = TraceWriter(tmp_path / "live.csv")
    session, clock = _session(sinks=(trace,))
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.0, 1.0)], 1.01))
    await mic.run(1.1)
    drained = asyncio.create_task(session.drain(timeout_s=30.0))
    await mic.run(0.2)
    assert await drained
    rows = (tmp_path / "live.csv").read_text().splitlines()
    # Every frame made by t = 1.1 s (27: frame k is made at (k + 1) * 40 + 20 ms) made it
    # out, including the two the pipeline's lookahead still held when the drain began.
    assert len(rows) - 1 == session.stats.frames_out == 27


async def test_live_session_equals_offline_render(tmp_path: Path) -> None:
    """The same audio through a live session (virtual clock, mic in time) and offline
    (the same stages, free-running) gives the same trace, byte for byte."""
    config = Config()
    audio = speech_like([(0.4, 1.6), (2.0, 2.9)], 3.37, seed=3)

    offline_path = tmp_path / "offline.csv"
    chunks = [AudioChunk(audio[i : i + 4000], i) for i in range(0, len(audio), 4000)]
    run_offline(Pipeline(fake_stages(config)), chunks, [TraceWriter(offline_path)])

    live_path = tmp_path / "live.csv"
    session, clock = _session(config, sinks=(TraceWriter(live_path),))
    images: list[float] = []
    sub = session.subscribe("video", maxsize=1000)
    session.start()
    mic = VirtualMic(session, clock, audio)
    await mic.run(len(audio) / 16000 + 0.02)
    session.end_input()
    while not session.finished.is_set():
        await mic.run(0.04)
    while (frame := await sub.get()) is not None:
        images.append(mouth_darkness(frame.image))
    await session.aclose()
    assert session.ingest.stats.samples_missing == 0 and session.stats.renders_skipped == 0
    assert live_path.read_text() == offline_path.read_text()
    assert len(images) == len(offline_path.read_text().splitlines()) - 1


def test_server_config_validates() -> None:

    from msadtalker.errors import ConfigError
    from streamer.config import load_config

    with pytest.raises(ConfigError, match="queue"):
        load_config(overrides={"server.queue_frames": 0})
    assert dataclasses.replace(SERVER, jitter_ms=0).jitter_ms == 0


def test_motion_stage_reset_shows_rest_on_the_next_frame() -> None:
    """Barge-in: after reset(), the next frame (weight 0 from the reset silence stage) has a
    closed mouth and, on the neural path, the neutral expression; pose/blink clocks go on."""
    from streamer.stages.motion import MotionStage
    from streamer.types import FeatureFrame, LipFrame, SilenceFrame

    stage = MotionStage()

    def frame(i: int, weight: float) -> SilenceFrame:
        features = FeatureFrame(i, np.zeros(640, np.float32), np.zeros((80, 16), np.float32))
        lips = LipFrame(features, 0.0, 0.8, 0.8, expression=np.ones(64, np.float32))
        return SilenceFrame(lips=lips, silent=weight == 0.0, weight=weight)

    for i in range(10):
        (out,) = stage.push(frame(i, 1.0))
    assert out.mouth_open == pytest.approx(0.8)
    stage.reset()
    (rest,) = stage.push(frame(10, 0.0))
    assert rest.mouth_open == 0.0 and rest.index == 10
    assert rest.expression is not None and not rest.expression.any()


async def test_voice_leaves_as_it_comes_and_matches_the_frames_time_line() -> None:
    session, clock = _session()
    frames = session.subscribe("frames", maxsize=1000)
    voice = session.subscribe_voice("voice", maxsize=1000)
    session.start()
    assert session.epoch_s is not None
    audio = speech_like([(0.0, 3.0)], 3.0)
    mic = VirtualMic(session, clock, audio)
    await mic.run(1.0)
    ticks = session.stats.ticks
    await clock.advance(0.02)
    session.feed(audio[mic.fed : mic.fed + 320])  # the first half of the next frame
    mic.fed += 320
    # Handed on at once, held back only by the pipeline's lookahead (the picture shows its
    # audio that much later): no tick ran, no picture was made for it.
    assert session.stats.ticks == ticks and session.delay_frames == 2
    last = voice._items[-1]
    assert last.start + len(last.audio) == mic.fed - session.delay_frames * 640
    await mic.settle()
    mic.stalled = True  # the mic stops: the ticks hand on what is missing, as silence
    await mic.run(0.4)
    mic.stalled = False
    await mic.run(0.6)
    chunks = list(voice._items)
    starts = [c.start for c in chunks]
    assert starts[0] == 0
    # In order, never overlapping (a gap is what the audio track fills with silence).
    assert all(b.start >= a.start + len(a.audio) for a, b in zip(chunks, chunks[1:], strict=False))
    line = np.zeros(chunks[-1].start + len(chunks[-1].audio), np.float32)
    for chunk in chunks:
        line[chunk.start : chunk.start + len(chunk.audio)] = chunk.audio
    made = _drain_queue(frames)
    assert len(made) > 40
    for frame in made:  # the voice is what each picture was made from
        start = frame.index * 640
        assert np.array_equal(frame.audio, line[start : start + 640])
    stalled = line[int(1.1 * 16000) : int(1.3 * 16000)]
    assert np.abs(stalled).max() == 0.0 and np.abs(line[:16000]).max() > 0.1
    session.interrupt()
    assert len(voice) == 0  # a barge-in drops the voice not yet sent, too
    await session.aclose()
    assert await voice.get() is None


class _StuckStage:
    """A motion stage that does not return until released: a step far slower than real
    time (the neural path on a CPU)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.delay_frames = inner.delay_frames

    def push(self, item: Any) -> list[Any]:
        self.release.wait(10.0)
        return list(self.inner.push(item))

    def flush(self) -> list[Any]:
        return list(self.inner.flush())

    def reset(self) -> None:
        self.inner.reset()


async def test_voice_goes_on_while_the_motion_steps_fall_behind() -> None:
    stages = fake_stages(Config())
    stuck = _StuckStage(stages[0])
    clock = VirtualClock()
    session = LiveSession([stuck, *stages[1:]], clock, SERVER)
    voice = session.subscribe_voice("voice", maxsize=1000)
    session.start()
    audio = speech_like([(0.0, 3.0)], 3.0)
    for start in range(0, len(audio), 320):  # the mic, every 20 ms
        await clock.advance(0.02)
        session.feed(audio[start : start + 320])
        await asyncio.sleep(0)
    assert session.stats.ticks == 0  # the first step has not returned
    chunks = list(voice._items)
    line = np.concatenate([c.audio for c in chunks])
    assert chunks[0].start == 0 and np.array_equal(line, audio[: len(line)])
    # All of the voice (less the lookahead it is held back by), ahead of any picture.
    assert len(line) == len(audio) - session.delay_frames * 640
    stuck.release.set()
    await session.aclose()
