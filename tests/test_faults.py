"""Faults: what a fault in one session, one client or one viewer does to the rest.

* a renderer that raises inside one session: that session ends with an error (its figures,
  then a 410 to its owner, say so; counted), its peer connection and its room's viewers are
  closed at once, the other session streams on without losing a frame; one ERROR with the
  traceback (a bug of ours), nothing of the exception's text reaches a client;
* a publisher whose process is killed (SIGKILL, no goodbye): cleaned up within
  ``peer_timeout_s`` (no RTCP for that long) and counted as ``vanished``;
* a viewer whose network stalls: the publisher and the other viewer lose no frame; the
  stalled viewer is dropped and counted.

A worker killed under ``serve --workers 2`` is in test_serve_workers.py. The figures (clean-up
time, frame rates) are printed (``pytest -rP``); no test asserts wall time: every wait has a
generous liveness bound instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from live_fakes import (
    FakeRenderStage,
    FrameWatch,
    VirtualMic,
    eventually,
    fake_stages,
    frames,
    speech_like,
    stall_network,
    within,
)

from streamer.clock import VirtualClock
from streamer.config import Config, ServerConfig
from streamer.io.webrtc_client import LoopbackClient, ReceivedVideo
from streamer.live_render import LiveRender
from streamer.pipeline import Pipeline
from streamer.server.app import make_app
from streamer.server.endings import Endings
from streamer.server.state import STATE, ServerState
from streamer.session import LiveSession
from streamer.types import AudioChunk, MotionFrame, VideoFrame

REPO = Path(__file__).resolve().parents[1]
VIDEO_TICKS = 3600  # 90 kHz video pts per 25 fps frame
SECRET_PATH = "/srv/secret/models/renderer.bin"  # in the exception: must reach no client
CLOSED = "msadtalker_peers_closed_total"


class FailingRenderStage(FakeRenderStage):
    """The fake renderer, raising on its ``fail_at``-th picture (1-based) and after; with
    ``release`` set, that render first waits for it (a failure while a render is in flight)."""

    def __init__(self, fail_at: int, release: Any = None) -> None:
        super().__init__()
        self._fail_at = fail_at
        self._release = release

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        if self.pushed + 1 >= self._fail_at:
            if self._release is not None:
                self._release.wait(10.0)
            raise RuntimeError(f"renderer bug at frame {item.index} in {SECRET_PATH}")
        return super().push(item)


class Live:
    """A live server (fake stages) and an HTTP client."""

    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.url = str(server.make_url("")).rstrip("/")

    @property
    def state(self) -> ServerState:
        return self.server.app[STATE]

    def client(self, audio: np.ndarray | None = None, **kwargs: Any) -> LoopbackClient:
        return LoopbackClient(self.url, audio, on_video=FrameWatch(), **kwargs)

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.url}{path}") as resp:
            return resp.status, dict(await resp.json())

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


Start = Callable[..., Awaitable[Live]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(stage_factory=None, **server_config)``: a server, closed after the test."""
    started: list[Live] = []

    async def run(stage_factory: Callable[[], list[Any]] | None = None, **server: Any) -> Live:
        config = Config(server=ServerConfig(jitter_ms=20, **server))
        app = make_app(config, stage_factory or (lambda: fake_stages(config)))
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server()
        started.append(Live(test_server, aiohttp.ClientSession()))
        return started[-1]

    yield run
    for live in started:
        await live.http.close()
        await live.server.close()


def indices(video: list[ReceivedVideo]) -> list[int]:
    return [f.pts // VIDEO_TICKS for f in video]


def contiguous(video: list[ReceivedVideo]) -> bool:
    """No frame index missing between the first and the last received."""
    got = indices(video)
    return got == list(range(got[0], got[0] + len(got))) if got else False


def frame_rate(video: list[ReceivedVideo]) -> float:
    """Frames per second of arrival over ``video`` (a figure to print, not to assert)."""
    span = video[-1].arrival - video[0].arrival if len(video) > 1 else 0.0
    return (len(video) - 1) / span if span > 0 else 0.0


# ------------------------------------------------------------------ a renderer that raises


async def test_a_renderer_exception_ends_that_session_and_the_other_streams_on(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    failing: list[FailingRenderStage] = []

    def stages() -> list[Any]:
        made = fake_stages()
        if not failing:  # the first session made: the first publisher's
            failing.append(FailingRenderStage(fail_at=40))
            made[-1] = failing[0]
        return made

    live = await start(stages)
    speech = speech_like([(0.3, 8.0)], 8.0)
    doomed = live.client(speech)
    await doomed.connect(live.http)
    watcher = live.client(role="viewer", room=doomed.answer["room"])
    await watcher.connect(live.http)
    other = live.client(speech)
    await other.connect(live.http)
    sessions = {sid: peer.session for sid, peer in live.state.peers.items()}
    failed = sessions[doomed.session_id]
    ended = asyncio.ensure_future(failed.finished.wait())
    try:
        # The failed session's peer connections are closed at once: the clients see it.
        await within(ended, 20.0, "the failure")
        failed_at = time.monotonic()
        await eventually(
            lambda: doomed.pc.connectionState == watcher.pc.connectionState == "closed",
            "the failed room's clients seeing their connections closed",
            20.0,
        )
        seen_s = time.monotonic() - failed_at
        print(f"figure: clients saw the failed session's close {1000 * seen_s:.0f} ms after it")
        assert failed.ended == "error"
        assert failed.error == "the avatar pipeline failed (RuntimeError)"
        assert failed.snapshot()["ended"] == "error"
        after = len(other.video)
        await frames(other).wait_for(frames(other).count + 50)  # two more seconds
        status, stats = await live.get(f"/sessions/{other.session_id}")
        assert status == 200 and stats["session"]["ended"] is None
        assert stats["session"]["dropped_frames"] == 0
        assert contiguous(other.video) and indices(other.video)[0] == 0
        rate = frame_rate(other.video[after:])
        print(f"figure: the other session after the failure: {rate:.1f} fps")
        # Its owner is told why (a fixed sentence: not the exception's text), so is the viewer.
        status, body = await live.get(f"/sessions/{doomed.session_id}")
        assert status == 410 and body["ended"] == "error", body
        assert body["error"].endswith("ended: the avatar pipeline failed")
        status, seen = await live.get(f"/sessions/{watcher.session_id}")
        assert status == 410 and seen["ended"] == "room_closed", seen
        assert seen["error"].endswith("its room closed: the avatar pipeline failed")
        assert SECRET_PATH not in json.dumps([body, seen])
        assert live.metric(CLOSED, role="publisher", reason="error") == 1
        assert live.metric(CLOSED, role="viewer", reason="room_closed") == 1
        assert live.metric("msadtalker_errors_total", kind="pipeline") == 1
        assert set(live.state.peers) == {other.session_id}
    finally:
        ended.cancel()
        await asyncio.gather(*(c.aclose() for c in (doomed, watcher, other)))
    # One ERROR, with its traceback: a bug of ours, said once.
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert "pipeline failed" in loud[0].getMessage() and loud[0].exc_info is not None


async def test_a_session_whose_renderer_raises_ends_with_its_reason() -> None:
    clock = VirtualClock()
    stages = [*fake_stages()[:-1], FailingRenderStage(fail_at=10)]
    failures: list[str] = []

    class Observer:
        def opened(self, session: LiveSession) -> None: ...
        def closed(self, session: LiveSession) -> None: ...
        def motion_step(self, seconds: float, ingest_buffered_s: float) -> None: ...
        def rendered(self, seconds: float) -> None: ...

        def pipeline_failed(self) -> None:
            failures.append("pipeline")

    session = LiveSession(stages, clock, ServerConfig(jitter_ms=20), observer=Observer())
    sub = session.subscribe("video", maxsize=100)
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.1, 2.0)], 2.0))
    await mic.run(1.0)
    assert session.finished.is_set() and session.ended == "error"
    assert session.error == "the avatar pipeline failed (RuntimeError)"
    assert failures == ["pipeline"]
    got = [await sub.get() for _ in range(len(sub) + 1)]
    assert got[-1] is None and len(got) - 1 == 9  # the 9 pictures made, then the end
    await session.aclose()
    assert session.ended == "error"  # closing keeps the reason


def _motions(count: int) -> list[MotionFrame]:
    pipeline: Pipeline[MotionFrame] = Pipeline(fake_stages(render=False))
    audio = speech_like([(0.0, 1.0)], 1.0)
    return pipeline.push(AudioChunk(samples=audio, start=0))[:count]


async def test_a_render_failing_while_the_session_closes_is_logged_once_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On the renderer's own thread: a render that fails after its frame gave up on it (and
    showed the last picture) is seen when the session closes: one ERROR, no exception out of
    ``aclose`` (which would leave the session's threads and sinks behind)."""
    import threading

    release = threading.Event()
    clock = VirtualClock()
    render = LiveRender(FailingRenderStage(fail_at=2, release=release), clock)
    render.threaded = True
    first, second = _motions(2)
    assert len(await render.frames([first], deadline=None)) == 1
    waiting = asyncio.ensure_future(render.frames([second], deadline=clock.now() + 0.04))
    await eventually(lambda: render.waiting_until is not None, "the frame waiting for its render")
    await clock.advance(0.05)
    (shown,) = await waiting  # its render is late: it shows the last picture
    assert render.late == 1 and render.busy
    caplog.set_level(logging.INFO)
    release.set()
    await render.aclose()
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(loud) == 1 and loud[0].exc_info is not None
    assert "render failed while the session was closing" in loud[0].getMessage()


def test_endings_are_bounded_expire_and_skip_hang_ups() -> None:
    now = [0.0]
    endings = Endings(limit=2, keep_s=10.0, clock=lambda: now[0])
    endings.record("a", "alice", "error")
    endings.record("b", "bob", "hangup")  # the client knows why: nothing kept
    endings.record("c", "carol", "room_closed", cause="vanished")
    assert len(endings) == 2 and endings.get("b") is None
    ending = endings.get("c")
    assert ending is not None and ending.sentence == "its room closed: its client stopped answering"
    endings.record("d", "dave", "idle")
    assert endings.get("a") is None and len(endings) == 2  # the oldest went
    now[0] = 10.5
    assert endings.get("c") is None and endings.get("d") is None


# ------------------------------------------------------------------ a killed publisher

# A publisher in a process of its own: prints its session id once connected, then streams
# until it is killed (120 s at most: a failed test leaves nothing running for long).
KILLED_CLIENT = """
import asyncio, sys
import aiohttp, numpy as np
from streamer.io.webrtc_client import LoopbackClient

async def main(url):
    t = np.arange(16000 * 20) / 16000
    voiced = np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    client = LoopbackClient(url, (0.3 * voiced).astype(np.float32), keep_audio=False,
                            decode_video=False)
    async with aiohttp.ClientSession() as http:
        await client.connect(http)
    print(client.session_id, flush=True)
    await asyncio.sleep(120)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_publisher_killed_with_sigkill_is_cleaned_up_within_the_peer_timeout(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    live = await start()  # the default peer_timeout_s: the figure is the production one
    timeout_s = live.state.server.peer_timeout_s
    stays = live.client(speech_like([(0.3, 30.0)], 30.0))
    await stays.connect(live.http)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_CLIENT, live.url, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        sid = (await within(proc.stdout.readline(), 60.0, "the client's session id")).decode()
        sid = sid.strip()
        peer = live.state.peers[sid]
        session = peer.session
        await within(session.wait_ticks(25), 20.0, "a second of the doomed client's session")
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await proc.wait()
        await proc.stdout.read()
        await within(session.finished.wait(), timeout_s + 20.0, "the end of its session")
        await eventually(
            lambda: sid not in live.state.peers and session._executor._shutdown,
            "its peer forgotten and its session's thread released",
        )
        cleanup_s = time.monotonic() - killed_at
        print(
            f"figure: SIGKILLed publisher cleaned up in {cleanup_s:.1f} s "
            f"(peer_timeout_s {timeout_s:g})"
        )
        assert live.metric(CLOSED, role="publisher", reason="vanished") == 1
        status, body = await live.get(f"/sessions/{sid}")
        assert status == 410 and body["ended"] == "vanished", body
        # The other publisher streamed on throughout, not a frame lost.
        await frames(stays).wait_for(frames(stays).count + 25)
        assert contiguous(stays.video) and indices(stays.video)[0] == 0
        assert set(live.state.peers) == {stays.session_id} and len(live.state.rooms) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await stays.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ------------------------------------------------------------------ a stalled viewer


async def test_a_stalled_viewer_slows_neither_the_publisher_nor_the_other_viewer(
    start: Start,
) -> None:
    live = await start(peer_timeout_s=2.0)
    publisher = live.client(speech_like([(0.3, 20.0)], 20.0))
    await publisher.connect(live.http)
    room = publisher.answer["room"]
    steady = live.client(role="viewer", room=room)
    await steady.connect(live.http)
    stalled = live.client(role="viewer", room=room)
    await stalled.connect(live.http)
    try:
        for client in (steady, stalled):
            await frames(client).wait_for(10)
        stall_network(stalled, True)
        first, first_published = len(steady.video), len(publisher.video)
        await eventually(
            lambda: stalled.session_id not in live.state.peers, "the stalled viewer dropped", 15.0
        )
        await frames(steady).wait_for(frames(steady).count + 25)  # and a second after it
        window = steady.video[first:]
        print(
            f"figure: while a viewer stalled and was dropped: the other viewer "
            f"{frame_rate(window):.1f} fps, the publisher "
            f"{frame_rate(publisher.video[first_published:]):.1f} fps"
        )
        assert contiguous(steady.video) and contiguous(publisher.video)
        for client in (publisher, steady):
            status, stats = await live.get(f"/sessions/{client.session_id}")
            assert status == 200
            assert all(track["dropped"] == 0 for track in stats["tracks"]), stats["tracks"]
        assert live.metric(CLOSED, role="viewer", reason="vanished") == 1
        assert set(live.state.peers) == {publisher.session_id, steady.session_id}
    finally:
        stall_network(stalled, False)
        await asyncio.gather(*(c.aclose() for c in (publisher, steady, stalled)))
