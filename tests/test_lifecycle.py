"""Lifecycle: liveness and readiness, the drain on SIGTERM (no new sessions, live sessions
finish, clients see the close at once, recordings complete, exit 0), and one name for the
drain key."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from live_fakes import eventually, fake_stages, speech_like, within

from msadtalker.errors import ConfigError
from streamer.config import Config, ServerConfig, load_config
from streamer.io.trace import read_trace
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.peers import close_peer, drain
from streamer.server.state import STATE, ServerState

REPO = Path(__file__).resolve().parents[1]
VIDEO_TICKS = 3600


def test_the_old_drain_key_is_an_error_that_names_the_new_one(tmp_path: Path) -> None:
    old = tmp_path / "old.toml"
    old.write_text("[server]\ndrain_timeout_s = 3.0\n")
    renamed = r"'server.drain_timeout_s' is now 'server.drain_s'"
    with pytest.raises(ConfigError, match=renamed):
        load_config(old)
    with pytest.raises(ConfigError, match=renamed):
        load_config(None, {"server.drain_timeout_s": 3.0})
    new = tmp_path / "new.toml"
    new.write_text("[server]\ndrain_s = 3.0\n")
    assert load_config(new).server.drain_s == 3.0
    with pytest.raises(ConfigError, match="drain_s >= 0"):
        load_config(None, {"server.drain_s": -1.0})


class Closed:
    """Set when a client's peer connection reaches ``closed`` (as aiortc reports it)."""

    def __init__(self, client: LoopbackClient) -> None:
        self.event = asyncio.Event()
        pc = client.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "closed":
                self.event.set()

    async def wait(self, what: str, timeout_s: float = 5.0) -> None:
        await within(self.event.wait(), timeout_s, what)


@pytest.fixture
async def live() -> AsyncIterator[tuple[str, ServerState, aiohttp.ClientSession]]:
    config = Config(server=ServerConfig(jitter_ms=20, drain_s=60.0))
    app = make_app(config, lambda: fake_stages(config))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield str(server.make_url("")).rstrip("/"), app[STATE], http
    finally:
        await server.close()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_draining_waits_for_a_speaking_session_and_refuses_new_ones(
    live: tuple[str, ServerState, aiohttp.ClientSession],
) -> None:
    """drain_s is long: the drain waits while the publisher speaks (and it keeps streaming),
    answers /readyz 503 and refuses offers, /healthz stays 200; it ends when the publisher
    hangs up."""
    url, state, http = live
    speaker = LoopbackClient(url, speech_like([(0.2, 30.0)], 30.0), decode_video=False)
    latecomer = LoopbackClient(url, speech_like([(0.2, 2.0)], 2.0), decode_video=False)
    try:
        await speaker.connect(http)
        await eventually(lambda: len(speaker.video) >= 25, "a second of video")
        assert (await _get(http, f"{url}/readyz"))[0] == 200
        (session,) = [p.session for p in state.peers.values()]
        await eventually(lambda: session.stats.silence_weight > 0.0, "the avatar speaking")
        draining = asyncio.create_task(drain(state))
        status, body = await _get(http, f"{url}/readyz")
        assert (status, body["ready"], body["reason"]) == (503, False, "draining")
        assert body["status"] == 503 and "shutting down" in body["error"]
        status, body = await _get(http, f"{url}/healthz")
        assert (status, body["alive"], body["ready"]) == (200, True, False)
        with pytest.raises(RuntimeError, match="503"):
            await latecomer.connect(http)
        before = len(speaker.video)
        await eventually(lambda: len(speaker.video) >= before + 25, "video during the drain")
        assert not draining.done()  # still speaking: still streaming
        closed = Closed(speaker)
        async with http.delete(f"{url}/sessions/{speaker.session_id}") as resp:
            assert resp.status == 200
        await within(draining, 10.0, "the end of the drain once the publisher left")
        await closed.wait("the close at the client")
        assert not state.peers and not state.tasks and not state.closing
    finally:
        await latecomer.aclose()
        await speaker.aclose()


async def test_a_session_that_is_not_speaking_is_closed_at_once_and_the_client_sees_it(
    live: tuple[str, ServerState, aiohttp.ClientSession],
) -> None:
    url, state, http = live
    quiet = LoopbackClient(url, speech_like([], 10.0), decode_video=False)
    viewer = LoopbackClient(url, role="viewer", decode_video=False)
    try:
        await quiet.connect(http)
        viewer.room = quiet.answer["room"]
        await viewer.connect(http)
        await eventually(lambda: len(viewer.video) >= 10, "video at the viewer")
        closed = [Closed(quiet), Closed(viewer)]
        # drain_s is a minute: nothing is waited for, as nobody is speaking.
        await within(drain(state), 10.0, "the drain of a silent session")
        for each, who in zip(closed, ("publisher", "viewer"), strict=True):
            await each.wait(f"the close at the {who}")
        assert not state.peers and not len(state.rooms)
    finally:
        await viewer.aclose()
        await quiet.aclose()


async def test_a_cancelled_close_still_closes_the_peer_connection(
    live: tuple[str, ServerState, aiohttp.ClientSession],
) -> None:
    """Cancelling whoever started a peer's cleanup (the drain cancels its tasks) must not
    leave the connection half closed: the client would see "connected" for ~30 s."""
    url, state, http = live
    client = LoopbackClient(url, speech_like([], 5.0), decode_video=False)
    try:
        await client.connect(http)
        (peer,) = state.peers.values()
        closed = Closed(client)
        first = asyncio.create_task(close_peer(state, peer))
        await asyncio.sleep(0)  # the cleanup has started
        first.cancel()
        await close_peer(state, peer)  # waits for the cleanup the first call started
        assert first.cancelled() or first.done()
        assert peer.pc is not None and peer.pc.connectionState == "closed"
        assert peer.session.finished.is_set()
        await closed.wait("the close at the client")
    finally:
        await client.aclose()


# ------------------------------------------------------------------ SIGTERM, for real


def _opened(path: Path) -> BinaryIO:
    """``path`` opened for the child's stderr (the child keeps its own copy)."""
    return path.open("wb")


@pytest.mark.slow
async def test_sigterm_drains_then_closes_and_exits_0(tmp_path: Path) -> None:
    """``msadtalker --log-format json serve --port 0`` with a speaking publisher and a viewer:
    SIGTERM makes /readyz 503 at once and refuses new sessions; after drain_s the sessions
    are flushed into their recordings and closed (both clients see it), the process exits 0,
    and every log line was one JSON object, the session's lines naming it."""
    record = tmp_path / "rec"
    config = tmp_path / "serve.toml"
    config.write_text(f'[server]\nrecord_dir = "{record}"\ndrain_s = 3.0\njitter_ms = 20\n')
    log_path = tmp_path / "serve.log"
    with _opened(log_path) as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamer.cli",
            "--log-format",
            "json",
            "-v",
            "serve",
            "--port",
            "0",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    clients: list[LoopbackClient] = []
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert match is not None, (line, log_path.read_text())
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            speaker = LoopbackClient(url, speech_like([(0.2, 30.0)], 30.0), decode_video=False)
            clients.append(speaker)
            await speaker.connect(http)
            viewer = LoopbackClient(url, role="viewer", room=speaker.answer["room"])
            clients.append(viewer)
            await viewer.connect(http)
            await eventually(lambda: len(viewer.video) >= 25, "a second of video", 30.0)
            closed = [Closed(speaker), Closed(viewer)]
            proc.send_signal(signal.SIGTERM)
            readiness: list[tuple[int, dict[str, Any]]] = []

            async def not_ready() -> None:  # once the signal is handled (it is asynchronous)
                while not readiness or readiness[-1][0] == 200:
                    readiness.append(await _get(http, f"{url}/readyz"))

            await within(not_ready(), 5.0, "/readyz 503 after SIGTERM")
            status, body = readiness[-1]
            assert (status, body["reason"]) == (503, "draining"), body
            assert (await _get(http, f"{url}/healthz"))[0] == 200
            latecomer = LoopbackClient(url, speech_like([(0.2, 1.0)], 1.0), decode_video=False)
            clients.append(latecomer)
            with pytest.raises(RuntimeError, match="503"):
                await latecomer.connect(http)
            for each, who in zip(closed, ("publisher", "viewer"), strict=True):
                await each.wait(f"the close at the {who}", timeout_s=15.0)
            code = await asyncio.wait_for(proc.wait(), 20)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log_text = log_path.read_text()
    assert code == 0, log_text
    (trace_path,) = record.glob("*.csv")
    trace = read_trace(trace_path)
    assert list(trace["frame"]) == list(range(len(trace)))
    sent = max(f.pts // VIDEO_TICKS for f in speaker.video) + 1
    assert len(trace) >= sent
    assert not list(record.glob(".*tmp"))
    lines = [json.loads(text) for text in log_text.splitlines()]
    assert all(isinstance(entry, dict) and entry["message"] for entry in lines)
    sid = speaker.session_id
    about = [e for e in lines if sid in e["message"] or viewer.session_id in e["message"]]
    assert len(about) >= 4  # joined and left, both peers
    assert all(e.get("session_id") in (sid, viewer.session_id) for e in about), about
    assert any("draining" in e["message"] for e in lines)
