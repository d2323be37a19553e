"""Fuzzing the live server with Hypothesis (seeded, no example database written).

Every route, the SDP parser and the real negotiation path (the parser, then aiortc's
``setRemoteDescription``/``createAnswer``): each request is answered with a 4xx carrying the
JSON ``{"error", "status"}`` or succeeds, never a 5xx; no answer carries a token the request
did not; no ERROR is logged; a session streaming all along loses no frame; afterwards the
server is alive and a new real session streams. The case generators and the runner are
``streamer.bench.fuzz_strategies`` and ``streamer.bench.fuzz_run``; the long run (>= 2,000
cases per target, with its figures in docs/live.md) is ``msadtalker bench fuzz``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from live_fakes import FrameWatch, fake_stages, frames, speech_like

from streamer.bench.fuzz_run import Sender, TargetFigures, fuzz_offers, fuzz_parser, fuzz_routes
from streamer.bench.fuzz_strategies import Credentials, http_requests
from streamer.config import AuthConfig, BroadcastConfig, Config, ServerConfig
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.auth import mint_room_token
from streamer.server.connections import ConnectionLimits, GuardedSite
from streamer.server.state import STATE

pytestmark = pytest.mark.slow
PUBLISHER = "fuzz-publisher-token-0001"
VIEWER = "fuzz-viewer-token-000001"
STREAMER = "fuzz-streamer-token-0001"  # the live session's: unknown to the fuzzer
SECRET = "fuzz-room-token-secret-01"
LIVE_ROOM = "live"
VIDEO_TICKS = 3600
SEED = 20240611


def credentials() -> Credentials:
    now = time.time()
    return Credentials(
        publisher=PUBLISHER,
        viewer=VIEWER,
        room_publisher=mint_room_token(SECRET, "publisher", "fuzz-room", 3600, now),
        room_viewer=mint_room_token(SECRET, "viewer", LIVE_ROOM, 3600, now),
        expired=mint_room_token(SECRET, "publisher", "fuzz-room", 1, now - 10),
    )


def _config(record_dir: Path) -> Config:
    auth = AuthConfig(
        publisher_tokens=(PUBLISHER, STREAMER), viewer_tokens=(VIEWER,), token_secret=SECRET
    )
    return Config(
        server=ServerConfig(jitter_ms=20, connect_timeout_s=2.0),
        auth=auth,
        broadcast=BroadcastConfig(record_dir=str(record_dir)),  # fuzzed recordings land here
    )


class Live:
    """The server as ``serve`` runs it (its public port's connection guard included), with the
    fake stages, and an HTTP client."""

    def __init__(self, runner: web.AppRunner, http: aiohttp.ClientSession) -> None:
        self.runner = runner
        self.app = runner.app
        self.http = http
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    def client(self, audio: Any = None, **kwargs: Any) -> LoopbackClient:
        return LoopbackClient(self.url, audio, on_video=FrameWatch(), **kwargs)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    config = _config(tmp_path)
    runner = web.AppRunner(make_app(config, lambda: fake_stages(config)), handle_signals=False)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, ConnectionLimits.of(config.server))
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Live(runner, http)
    finally:
        await runner.cleanup()


def _clean(figures: TargetFigures) -> None:
    summary = figures.as_dict()
    assert not figures.server_errors, summary
    assert not figures.non_json_errors, summary
    assert not figures.leaks, summary
    assert not figures.failed_hangups, summary


def test_the_offer_parser_refuses_or_accepts_and_never_crashes() -> None:
    figures = fuzz_parser(400, SEED)
    _clean(figures)
    statuses = figures.as_dict()["statuses"]
    # The cases reach both outcomes: many offers are accepted (they go on to aiortc).
    assert statuses.get("200", 0) > 40 and statuses.get("400", 0) > 40, statuses


async def test_every_route_and_the_negotiation_path_answer_4xx_json_and_log_no_error(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    streaming = live.client(speech_like([(0.3, 30.0)], 30.0), room=LIVE_ROOM, token=STREAMER)
    await streaming.connect(live.http)
    pending = live.client(speech_like([], 1.0), token=PUBLISHER, read_media=False)
    await pending.connect(live.http)  # a session of the fuzzer's publisher token
    await frames(streaming).wait_for(10)
    ids = [streaming.session_id, pending.session_id, "w0-" + streaming.session_id]
    sender = Sender(live.url, credentials().secrets())
    requests = http_requests(credentials(), ids, [LIVE_ROOM, "fuzz-room"])
    try:
        routes = await asyncio.to_thread(fuzz_routes, sender, requests, 300, SEED)
        offers = await asyncio.to_thread(
            fuzz_offers, sender, f"Bearer {PUBLISHER}", [LIVE_ROOM, "fuzz-room"], 150, SEED
        )
        for figures in (routes, offers):
            _clean(figures)
        statuses = routes.as_dict()["statuses"]
        # The search reaches the routes' answers and refusals; which refusal codes a run draws
        # varies (it is steered by the answers' latency): a few kinds beyond these, always.
        assert {"200", "400", "404"} <= set(statuses) and len(statuses) >= 5, statuses
        # Some offers reach the negotiation path and are answered (how many varies: the
        # search is steered by the answers' latency).
        assert offers.as_dict()["answered_offers_hung_up"] >= 3, (offers.as_dict(), statuses)
        # The session streamed through it all, in order, nothing lost on the way: a frame
        # missing is one the server itself dropped (its queues drop the oldest when the
        # sender falls behind, as on a machine this busy) and counted.
        await frames(streaming).wait_for(frames(streaming).count + 25)
        got = [f.pts // VIDEO_TICKS for f in streaming.video]
        assert got == sorted(set(got)) and got[0] == 0, got[:10]
        state = live.app[STATE]
        peer = state.peers[streaming.session_id]
        dropped = sum(s.dropped for s in peer.subscriptions if s.name.endswith("-video"))
        assert got[-1] + 1 - len(got) <= dropped, (got[-1] + 1 - len(got), dropped)
        assert streaming.session_id in state.peers and state.negotiating == 0
        # A new real session works.
        after = live.client(speech_like([(0.3, 3.0)], 3.0), token=PUBLISHER)
        await after.connect(live.http)
        await frames(after).wait_for(25)
        await after.aclose()
    finally:
        await asyncio.gather(streaming.aclose(), pending.aclose())
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud[:5]]
    assert not [r for r in caplog.records if r.exc_info is not None]


async def test_the_fuzz_finds_a_server_error_when_there_is_one(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks can fail: with an offer handler that breaks, the offers are 5xx."""

    def broken(body: bytes, max_sdp_bytes: int) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("streamer.server.handlers.parse_offer", broken)
    sender = Sender(live.url)
    figures = await asyncio.to_thread(fuzz_offers, sender, f"Bearer {PUBLISHER}", [], 10, SEED)
    assert figures.server_errors and figures.as_dict()["failing_cases"]


# ------------------------------------------------------------------ what the fuzz found


async def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("expect", [b"nonsense", b"\xff\xfe\xed\xa0\x80", b"100-continue, x"])
async def test_an_unsupported_expect_header_is_a_json_417_without_an_error_logged(
    live: Live, caplog: pytest.LogCaptureFixture, expect: bytes
) -> None:
    """aiohttp answers ``Expect`` before any middleware: text quoting the header, and a 500
    with an ERROR traceback when it is not UTF-8, whatever the route (found by the fuzz)."""
    caplog.set_level(logging.INFO)
    for path in (b"/offer", b"/nowhere"):
        request = b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nExpect: " + expect
        answer = await _raw(live.url, request + b"\r\nContent-Length: 2\r\n\r\n{}")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 417 "), answer
        assert json.loads(body) == {
            "error": "unsupported Expect header (only 100-continue is)",
            "status": 417,
        }
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_expect_100_continue_still_works(live: Live) -> None:
    request = (
        b"POST /offer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    answer = await _raw(live.url, request)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 "), answer
