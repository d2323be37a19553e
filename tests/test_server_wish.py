"""WHIP ingest and WHEP egress (``streamer.server.whip``, ``whep``, ``wish``), with aiortc as
the WHIP and WHEP client over loopback: what a WHIP publisher drives is what a WHEP viewer and
an ``/offer`` viewer both see, frame for frame; DELETE frees everything; every refusal is a
JSON 4xx naming the problem; tokens apply."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from live_fakes import (
    FrameWatch,
    eventually,
    frames,
    mouth_probe,
    speech_like,
    stages_under_test,
    stall_network,
)
from wish_client import WishClient

from streamer.config import AuthConfig, Config, IceConfig, ServerConfig
from streamer.io.aiortc_workarounds import use_loopback_candidates
from streamer.io.webrtc import make_peer_connection
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.state import STATE, ServerState

PUBLISHER = "publisher-token-0123456789"
OTHER_PUBLISHER = "publisher-token-abcdefghij"
VIEWER = "viewer-token-0123456789abc"
TURN_SECRET = "turn-shared-secret-0123456789"


class Live:
    def __init__(self, server: TestServer, http: aiohttp.ClientSession, probe: Any) -> None:
        self.server = server
        self.http = http
        self.url = str(server.make_url("")).rstrip("/")
        self.openness = probe.openness if probe is not None else None

    @property
    def state(self) -> ServerState:
        return self.server.app[STATE]

    async def wait_until_empty(self) -> None:
        state = self.state
        await eventually(
            lambda: not state.peers and not len(state.rooms) and not state.closing,
            f"every peer and room gone (left: {list(state.peers)})",
        )


async def _live(config: Config, probe: bool = False) -> AsyncIterator[Live]:
    # The stages do not depend on tokens or ICE servers: one preparation for every test.
    stages = stages_under_test(dataclasses.replace(config, auth=AuthConfig(), ice=IceConfig()))
    server = TestServer(make_app(config, stages), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Live(server, http, mouth_probe(stages) if probe else None)
    await server.close()


def _server(**more: Any) -> ServerConfig:
    return ServerConfig(jitter_ms=20, connect_timeout_s=5.0, peer_timeout_s=1.5, **more)


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async for live in _live(Config(server=_server()), probe=True):
        yield live


AUTH = AuthConfig(publisher_tokens=(PUBLISHER, OTHER_PUBLISHER), viewer_tokens=(VIEWER,))


@pytest.fixture
async def guarded() -> AsyncIterator[Live]:
    async for live in _live(Config(server=_server(), auth=AUTH)):
        yield live


@pytest.fixture
async def guarded_ice() -> AsyncIterator[Live]:
    """Tokens, TURN REST and STUN (on addresses nothing answers: nothing here negotiates,
    which would wait for them; tests/test_server_turn.py has a real TURN server)."""
    ice = IceConfig(
        stun_urls=("stun:127.0.0.1:9",),
        turn_urls=("turn:127.0.0.1:9?transport=udp",),
        turn_secret=TURN_SECRET,
    )
    async for live in _live(Config(server=_server(), auth=AUTH, ice=ice)):
        yield live


async def _sdp(audio: str | None = "sendonly", video: str | None = None) -> str:
    pc = make_peer_connection()
    if audio:
        pc.addTransceiver("audio", direction=audio)
    if video:
        pc.addTransceiver("video", direction=video)
    use_loopback_candidates(pc, "only")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def _bearer(token: str | None = None, content_type: str = "application/sdp") -> dict[str, str]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _refused(resp: aiohttp.ClientResponse, status: int, pattern: str) -> None:
    body = await resp.json()
    assert resp.status == status, body
    assert resp.content_type == "application/json"
    assert body["status"] == status and re.search(pattern, body["error"], re.IGNORECASE), body


def _section(sdp: str, kind: str) -> str:
    return next(part for part in sdp.split("m=")[1:] if part.startswith(kind))


@pytest.mark.slow
async def test_a_whip_publisher_is_seen_alike_over_whep_and_offer(live: Live) -> None:
    speech = speech_like([(0.2, 1.2), (1.6, 2.6)], 3.0)
    publisher = WishClient("publisher", audio=speech, send_video=True)
    answer = await publisher.connect(live.http, f"{live.url}/whip/show")
    assert answer.headers["Content-Type"] == "application/sdp"
    assert re.fullmatch(r"/whip/resource/[0-9A-Za-z_-]*[0-9a-f]{32}", publisher.location)
    assert re.fullmatch(r'"[0-9a-f]{32}"', answer.headers["ETag"])
    assert not answer.headers.getall("Link", [])  # no ICE servers configured
    # OBS sends its scene: answered inactive, never decoded.
    assert "a=inactive" in _section(answer.body, "video")
    assert "a=recvonly" in _section(answer.body, "audio")

    whep = WishClient("viewer", measure=live.openness)
    await whep.connect(live.http, f"{live.url}/whep/show")
    assert whep.location.startswith("/whep/resource/")
    page = LoopbackClient(live.url, role="viewer", room="show", on_video=FrameWatch(live.openness))
    await page.connect(live.http)
    await asyncio.gather(whep.wait_frames(60), frames(page).wait_for(60))
    # The same frames: the same pts carry the same picture (the mouth as the probe reads it;
    # each viewer has its own encoder, whose quality may differ for a frame or two).
    seen_whep = dict(whep.frames)
    seen_page = {f.pts: f.value for f in page.video}
    common = sorted(set(seen_whep) & set(seen_page))
    assert len(common) >= 40, (len(seen_whep), len(seen_page))
    a = np.array([seen_whep[p] for p in common])
    b = np.array([seen_page[p] for p in common])
    assert a.max() > 0.25  # the speech opened the mouth: the comparison has something to see
    assert float(np.quantile(np.abs(a - b), 0.9)) < 0.05, (np.round(a, 2), np.round(b, 2))
    # ... and not merely similar ones: shifted by a frame or more they match worse.
    misaligned = [float(np.abs(a[k:] - b[: len(b) - k]).mean()) for k in range(1, 6)]
    misaligned += [float(np.abs(b[k:] - a[: len(a) - k]).mean()) for k in range(1, 6)]
    assert float(np.abs(a - b).mean()) < min(misaligned)
    assert whep.audio_frames >= 50  # its voice came with the pictures

    # The resource is the session: its figures, a PATCH that changes nothing, then DELETE.
    session_id = publisher.location.rsplit("/", 1)[1]
    async with live.http.get(f"{live.url}/sessions/{session_id}") as resp:
        stats = await resp.json()
    assert (stats["role"], stats["room"], stats["viewers"]) == ("publisher", "show", 2)
    patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
    async with live.http.patch(live.url + publisher.location, headers=patch_headers) as resp:
        await _refused(resp, 405, "trickle")
        assert resp.headers["Allow"] == "DELETE"
    async with live.http.delete(live.url + whep.location) as resp:
        assert resp.status == 200
    assert len(live.state.rooms.get("show").viewers) == 1  # type: ignore[union-attr]
    async with live.http.delete(live.url + publisher.location) as resp:
        assert resp.status == 200
    await live.wait_until_empty()  # the room, its session and its other viewer
    async with live.http.delete(live.url + publisher.location) as resp:
        await _refused(resp, 404, "no WHIP resource")  # a hang-up: the id is unknown again
    for client in (publisher, whep):
        await client.aclose()
    await page.aclose()


async def test_bad_whip_and_whep_requests_are_json_4xx(live: Live) -> None:
    url, http = live.url, live.http
    mic = await _sdp("sendonly", "sendonly")
    watch = await _sdp("recvonly", "recvonly")
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("/whip/show", mic.encode(), _bearer(content_type="application/json"), 415, "sdp"),
        ("/whip/show", (await _sdp(None, "sendonly")).encode(), _bearer(), 400, "no audio"),
        ("/whip/show", (await _sdp("recvonly")).encode(), _bearer(), 400, "must send"),
        ("/whip/show", b"", _bearer(), 400, "empty"),
        ("/whip/show", b"hello", _bearer(), 400, "malformed SDP"),
        ("/whip/show", b"\xff\xfe", _bearer(), 400, "UTF-8"),
        ("/whip/bad.room", mic.encode(), _bearer(), 400, "room"),
        ("/whip/show", b"v=0\r\n" + b"a=x\r\n" * 20_000, _bearer(), 413, "larger"),
        ("/whep/show", watch.encode(), _bearer(), 404, "no room 'show'"),
        ("/whep/show", (await _sdp("sendrecv", "recvonly")).encode(), _bearer(), 400, "recvonly"),
        ("/whep/show", (await _sdp("sendonly", "recvonly")).encode(), _bearer(), 400, "recvonly"),
        ("/whep/show", (await _sdp("recvonly", "sendrecv")).encode(), _bearer(), 400, "video"),
        ("/whep/show", (await _sdp("recvonly")).encode(), _bearer(), 400, "receive video"),
        ("/whip/resource/nobody", b"", _bearer(), 405, "not allowed"),
    ]
    for path, body, headers, status, pattern in cases:
        async with http.post(url + path, data=body, headers=headers) as resp:
            await _refused(resp, status, pattern)
    for method in ("DELETE", "PATCH"):
        async with http.request(method, f"{url}/whip/resource/{'0' * 32}") as resp:
            await _refused(resp, 404, "no WHIP resource")
    assert not live.state.peers and not len(live.state.rooms)


async def test_tokens_decide_who_publishes_watches_and_ends(guarded: Live) -> None:
    url, http = guarded.url, guarded.http
    mic, watch = await _sdp("sendonly"), await _sdp("recvonly", "recvonly")
    async with http.post(f"{url}/whip/show", data=mic, headers=_bearer()) as resp:
        await _refused(resp, 401, "token")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(f"{url}/whip/show", data=mic, headers=_bearer(VIEWER)) as resp:
        await _refused(resp, 403, "viewer token cannot act as publisher")
    async with http.post(f"{url}/whip/show", data=mic, headers=_bearer(PUBLISHER)) as resp:
        assert resp.status == 201, await resp.text()
        whip = resp.headers["Location"]
    async with http.post(f"{url}/whip/show", data=mic, headers=_bearer(PUBLISHER)) as resp:
        await _refused(resp, 409, "already has a publisher")
    async with http.post(f"{url}/whep/show", data=watch, headers=_bearer(VIEWER)) as resp:
        assert resp.status == 201, await resp.text()
        whep = resp.headers["Location"]
    # Another client's resources do not exist for it; the creator ends its own.
    for path in (whip, whep):
        async with http.delete(url + path, headers=_bearer(OTHER_PUBLISHER)) as resp:
            await _refused(resp, 404, "no WHIP resource|no WHEP resource")
        async with http.delete(url + path) as resp:
            await _refused(resp, 401, "token")
    async with http.delete(url + whep.replace("/whep/", "/whip/"), headers=_bearer(VIEWER)) as r:
        await _refused(r, 404, "no WHIP resource")  # a WHEP session is not a WHIP resource
    async with http.delete(url + whep, headers=_bearer(VIEWER)) as resp:
        assert resp.status == 200
    async with http.delete(url + whip, headers=_bearer(PUBLISHER)) as resp:
        assert resp.status == 200
    await guarded.wait_until_empty()


def _turn_credential_ok(username: str, credential: str) -> bool:
    digest = hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode() == credential


async def test_ice_servers_go_to_callers_with_a_token_only(guarded_ice: Live) -> None:
    url, http = guarded_ice.url, guarded_ice.http
    async with http.get(f"{url}/ice-servers") as resp:
        await _refused(resp, 401, "token")
    async with http.get(f"{url}/ice-servers", headers=_bearer(VIEWER)) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        servers = (await resp.json())["iceServers"]
    assert servers[0] == {"urls": ["stun:127.0.0.1:9"]}
    turn = servers[1]
    assert turn["urls"] == ["turn:127.0.0.1:9?transport=udp"]
    expiry, user = turn["username"].split(":")
    assert user == "msadtalker" and int(expiry) > 0
    assert _turn_credential_ok(turn["username"], turn["credential"])
    # OPTIONS: what the endpoint takes, and the ICE servers for a caller with a token alone.
    async with http.options(f"{url}/whip/show") as resp:
        assert resp.status == 204
        assert resp.headers["Accept-Post"] == "application/sdp"
        assert "POST" in resp.headers["Allow"] and not resp.headers.getall("Link", [])
    async with http.options(f"{url}/whep/show", headers=_bearer(VIEWER)) as resp:
        assert resp.status == 204
        links = resp.headers.getall("Link")
    assert links[0] == '<stun:127.0.0.1:9>; rel="ice-server"'
    fields = dict(re.findall(r'(username|credential)="([^"]*)"', links[1]))
    assert _turn_credential_ok(fields["username"], fields["credential"])
    assert 'credential-type="password"' in links[1]


async def test_whip_posts_spend_the_offer_budget() -> None:
    config = Config(server=_server(offers_burst=2, offers_per_minute=1.0))
    async for live in _live(config):
        statuses = []
        for _ in range(3):
            headers = _bearer(content_type="text/plain")
            async with live.http.post(f"{live.url}/whip/show", data=b"x", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [415, 415, 429]


async def test_a_whip_client_that_vanishes_is_closed_with_its_room(live: Live) -> None:
    publisher = WishClient("publisher", audio=speech_like([(0.2, 1.0)], 2.0))
    await publisher.connect(live.http, f"{live.url}/whip/gone")
    viewer = WishClient("viewer")
    await viewer.connect(live.http, f"{live.url}/whep/gone")
    # Only its media says it is there (it receives nothing to report on): past
    # peer_timeout_s it is still the room's publisher while it sends.
    await viewer.wait_frames(2 * round(25 * live.state.server.peer_timeout_s))
    session_id = publisher.location.rsplit("/", 1)[1]
    assert session_id in live.state.peers
    stall_network(publisher, True)  # gone without a DELETE
    await live.wait_until_empty()
    async with live.http.get(f"{live.url}/sessions/{session_id}") as resp:
        await _refused(resp, 410, "stopped answering")
    stall_network(publisher, False)
    await viewer.aclose()
    await publisher.aclose()
