"""Signalling and bad input: every refusal is a clear 4xx with a JSON body, nothing leaks."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from live_fakes import eventually, stages_under_test

from streamer.config import Config, ServerConfig
from streamer.io.aiortc_workarounds import use_loopback_candidates
from streamer.io.webrtc import make_peer_connection
from streamer.server.app import make_app
from streamer.server.peers import drain
from streamer.server.state import STATE


def _config(**server: Any) -> Config:
    base: dict[str, Any] = {"jitter_ms": 20, "connect_timeout_s": 1.0, "max_sessions": 16}
    base.update(server)
    return Config(server=ServerConfig(**base))


Client = TestClient[web.Request, web.Application]


async def _client(config: Config) -> Client:
    app = make_app(config, stages_under_test(config))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = await _client(_config())
    yield c
    await c.close()


async def _offer_sdp(audio: str | None = "sendrecv", video: str | None = "recvonly") -> str:
    pc = make_peer_connection()
    if audio:
        pc.addTransceiver("audio", direction=audio)
    if video:
        pc.addTransceiver("video", direction=video)
    use_loopback_candidates(pc, "only")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    return asyncio.run(_offer_sdp())


async def _expect_error(resp: ClientResponse, status: int, pattern: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status
    assert re.search(pattern, body["error"], re.IGNORECASE), body
    return body


async def test_healthz_and_readyz_answer_while_sessions_are_accepted(client: Client) -> None:
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        assert resp.status == 200
        body = await resp.json()
        assert (body["ready"], body["reason"]) == (True, "ok")


@pytest.mark.parametrize(
    ("body", "status", "pattern"),
    [
        (b"not json at all", 400, "not JSON"),
        (b"\xff\xfe\x00", 400, "not JSON"),
        (b"[1, 2, 3]", 400, "JSON object"),
        (b'{"sdp": "v=0", "type": "answer"}', 400, '"type"'),
        (b'{"type": "offer"}', 400, '"sdp"'),
        (b'{"type": "offer", "sdp": 42}', 400, '"sdp"'),
        (b'{"type": "offer", "sdp": "hello"}', 400, "malformed SDP"),
        (b'{"type": "offer", "sdp": "v=0\\r\\nm=audio\\r\\n"}', 400, "malformed SDP"),
        (b'{"type": "offer", "sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\n"}', 400, "no media"),
        (b'{"type": "offer", "sdp": "v=0", "role": "boss"}', 400, '"role"'),
        (b'{"type": "offer", "sdp": "v=0", "role": "viewer"}', 400, "room"),
    ],
)
async def test_bad_offer_bodies_get_a_400(
    client: Client, body: bytes, status: int, pattern: str
) -> None:
    resp = await client.post("/offer", data=body, headers={"Content-Type": "application/json"})
    await _expect_error(resp, status, pattern)
    _assert_clean(client)


async def test_huge_bodies_and_sdp_are_refused_unread(client: Client, offer_sdp: str) -> None:
    limit = ServerConfig().max_sdp_bytes
    resp = await client.post("/offer", data=b"x" * (3 * limit))
    await _expect_error(resp, 413, "too large")
    padded = offer_sdp + "a=x-padding:" + "y" * limit + "\r\n"
    resp = await client.post("/offer", json={"type": "offer", "sdp": padded})
    await _expect_error(resp, 413, "larger than")
    _assert_clean(client)


async def test_offers_without_a_microphone_are_refused(client: Client) -> None:
    no_audio = await _offer_sdp(audio=None)
    resp = await client.post("/offer", json={"type": "offer", "sdp": no_audio})
    await _expect_error(resp, 400, "no microphone")
    listen_only = await _offer_sdp(audio="recvonly")
    resp = await client.post("/offer", json={"type": "offer", "sdp": listen_only})
    await _expect_error(resp, 400, "no microphone")
    no_video = await _offer_sdp(video=None)
    resp = await client.post("/offer", json={"type": "offer", "sdp": no_video})
    await _expect_error(resp, 400, "video")
    _assert_clean(client)


def _only_codec(sdp: str, kind: str, payload: str, rtpmap: str) -> str:
    """``sdp`` with the ``kind`` m-line offering nothing but ``rtpmap``."""
    out = []
    current = None
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            current = line[2:].split()[0]
            if current == kind:
                out += [" ".join([*line.split()[:3], payload]), f"a=rtpmap:{payload} {rtpmap}"]
                continue
        elif current == kind and line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            continue
        out.append(line)
    return "\r\n".join(out)


def _assert_clean(client: Client) -> None:
    """Nothing of a refused offer is left: no peer, room, negotiation or task."""
    state = client.app[STATE]
    assert not state.peers and not len(state.rooms) and state.negotiating == 0
    assert not state.tasks


@pytest.mark.parametrize(
    ("kind", "payload", "rtpmap"),
    [
        ("audio", "103", "ISAC/16000"),
        ("audio", "9", "G7221/16000"),
        ("video", "98", "H265/90000"),
        ("video", "45", "AV1/90000"),
    ],
)
async def test_unsupported_codecs_are_refused(
    client: Client, offer_sdp: str, kind: str, payload: str, rtpmap: str
) -> None:
    sdp = _only_codec(offer_sdp, kind, payload, rtpmap)
    resp = await client.post("/offer", json={"type": "offer", "sdp": sdp})
    await _expect_error(resp, 400, f"no supported {kind} codec")
    _assert_clean(client)


async def test_a_failure_of_ours_is_a_json_500_and_leaves_nothing(offer_sdp: str) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("stage construction failed")

    app = make_app(_config(), broken)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        resp = await client.post("/offer", json={"type": "offer", "sdp": offer_sdp})
        await _expect_error(resp, 500, "internal server error")
        _assert_clean(client)
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_unknown_sessions_and_rooms_are_404(client: Client, offer_sdp: str) -> None:
    await _expect_error(await client.get("/sessions/nope"), 404, "no session")
    await _expect_error(await client.post("/sessions/nope/interrupt"), 404, "no session")
    await _expect_error(await client.delete("/sessions/nope"), 404, "no session")
    resp = await client.post(
        "/offer",
        json={
            "type": "offer",
            "sdp": await _offer_sdp(audio="recvonly"),
            "role": "viewer",
            "room": "nobody-here",
        },
    )
    await _expect_error(resp, 404, "no room")
    await _expect_error(await client.get("/no/such/page"), 404, "Not Found")
    await _expect_error(await client.get("/offer"), 405, "Not Allowed")


async def test_a_hundred_offers_at_once() -> None:
    """16 are taken, the rest get 503 (the server is full); the ones nobody connects to are
    closed after the connect timeout and every task and peer connection is gone; then the
    server works. (One client's offers and offers still connecting are limited too: not
    here, see tests/test_server_limits.py.)"""
    unlimited = {"max_pending_per_client": 100, "max_pending": 100, "offers_burst": 100}
    config = _config(max_sessions=16, connect_timeout_s=1.0, **unlimited)
    client = await _client(config)
    try:
        sdp = await _offer_sdp()
        body = {"type": "offer", "sdp": sdp}
        responses = await asyncio.gather(*(client.post("/offer", json=body) for _ in range(100)))
        statuses = sorted(r.status for r in responses)
        assert statuses.count(200) == 16 and statuses.count(503) == 84, statuses
        refused = next(r for r in responses if r.status == 503)
        await _expect_error(refused, 503, "session limit")
        assert refused.headers.get("Retry-After")
        state = client.app[STATE]
        assert len(state.peers) == 16 and len(state.rooms) == 16
        sessions = [p.session for p in state.peers.values()]
        await eventually(
            lambda: not state.peers and not state.tasks, "every unconnected peer closed"
        )
        assert not len(state.rooms)
        assert all(s.finished.is_set() for s in sessions)
        assert all(s._executor._shutdown for s in sessions)
        ours = [t for t in asyncio.all_tasks() if t.get_name().startswith(("session-", "close-"))]
        assert not ours
        resp = await client.post("/offer", json=body)
        assert resp.status == 200
    finally:
        await client.close()


async def test_a_room_has_one_publisher_and_readyz_says_when_full(offer_sdp: str) -> None:
    client = await _client(_config(max_sessions=2))
    try:
        body = {"type": "offer", "sdp": offer_sdp, "room": "lobby"}
        first = await client.post("/offer", json=body)
        assert first.status == 200 and (await first.json())["room"] == "lobby"
        await _expect_error(await client.post("/offer", json=body), 409, "already has")
        for name in ("no spaces!", "ünïcode", "x" * 65, 42):
            bad = await client.post("/offer", json={**body, "room": name})
            await _expect_error(bad, 400, '"room"')
        assert (await client.get("/readyz")).status == 200
        other = await client.post("/offer", json={"type": "offer", "sdp": offer_sdp})
        assert other.status == 200
        full = await _expect_error(await client.get("/readyz"), 503, "session limit")
        assert (full["ready"], full["reason"]) == (False, "full")
        alive = await client.get("/healthz")  # full is not dead: liveness stays 200
        assert alive.status == 200 and (await alive.json())["reason"] == "full"
    finally:
        await client.close()


async def test_drain_stops_accepting(client: Client, offer_sdp: str) -> None:
    resp = await client.post("/offer", json={"type": "offer", "sdp": offer_sdp})
    assert resp.status == 200
    await drain(client.app[STATE])
    ready = await _expect_error(await client.get("/readyz"), 503, "shutting down")
    assert ready["reason"] == "draining"
    assert (await client.get("/healthz")).status == 200
    resp = await client.post("/offer", json={"type": "offer", "sdp": offer_sdp})
    await _expect_error(resp, 503, "shutting down")
    assert not client.app[STATE].peers


async def test_pages_are_served(client: Client) -> None:
    for path, marker in (
        ("/", 'data-role="publisher"'),
        ("/viewer", 'data-role="viewer"'),
        ("/static/app.js", "RTCPeerConnection"),
    ):
        resp = await client.get(path)
        assert resp.status == 200
        assert marker in await resp.text()
    # The avatar at rest, shown by the pages before they connect.
    resp = await client.get("/avatar.jpg")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(await resp.read(), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[0] >= 64 and picture.std() > 10
