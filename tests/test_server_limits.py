"""Limits and bad clients: what one client, and all of them, may ask of a server.

Offers aiortc cannot answer are 400s (not 500s) and malformed requests log no ERROR; one
client's offers are limited per minute and while they connect, so it cannot lock others out;
capacity limits are 503 + Retry-After; idle and overlong sessions are closed. Clients at
different addresses are real: loopback is all of 127.0.0.0/8, and each test client binds
its own source address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer, make_mocked_request
from aiortc import RTCPeerConnection
from live_fakes import FrameWatch, eventually, fake_stages, frames, speech_like, within

from msadtalker.errors import ConfigError
from streamer.config import Config, ServerConfig, load_config
from streamer.io.aiortc_workarounds import use_loopback_candidates
from streamer.io.webrtc import make_peer_connection
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.clients import ClientLimits, client_address
from streamer.server.ratelimit import RateLimiter
from streamer.server.state import STATE, ServerState

JSON = {"Content-Type": "application/json"}
A, B, C = "127.0.0.1", "127.0.0.2", "127.0.0.3"  # three clients


def _config(**server: Any) -> Config:
    base: dict[str, Any] = {"jitter_ms": 20, "connect_timeout_s": 1.0}
    base.update(server)
    return Config(server=ServerConfig(**base))


class Server:
    """A live server (fake stages) and HTTP clients at several loopback addresses."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.url = str(server.make_url("")).rstrip("/")
        self._http: dict[str, aiohttp.ClientSession] = {}

    @property
    def state(self) -> ServerState:
        return self.server.app[STATE]

    def http(self, address: str = A) -> aiohttp.ClientSession:
        """A client session whose connections come from ``address``."""
        if address not in self._http:
            connector = aiohttp.TCPConnector(local_addr=(address, 0))
            self._http[address] = aiohttp.ClientSession(connector=connector)
        return self._http[address]

    async def offer(self, body: Any, address: str = A, **headers: str) -> ClientResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http(address).post(
            f"{self.url}/offer", data=data, headers={**JSON, **headers}
        ) as resp:
            await resp.read()
            return resp

    async def aclose(self) -> None:
        for http in self._http.values():
            await http.close()
        await self.server.close()


async def _start(config: Config) -> Server:
    server = TestServer(make_app(config, lambda: fake_stages(config)), host=A)
    await server.start_server()
    return Server(server)


Serve = Callable[..., Awaitable[Server]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(**server_config_fields)``: a server, closed after the test."""
    started: list[Server] = []

    async def start(**server: Any) -> Server:
        started.append(await _start(_config(**server)))
        return started[-1]

    yield start
    for server in started:
        await server.aclose()


async def _offer_sdp(audio: str = "sendrecv") -> str:
    pc = make_peer_connection()
    pc.addTransceiver("audio", direction=audio)
    pc.addTransceiver("video", direction="recvonly")
    use_loopback_candidates(pc, "only")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def sdp() -> str:
    return asyncio.run(_offer_sdp())


@pytest.fixture(scope="module")
def viewer_sdp() -> str:
    return asyncio.run(_offer_sdp("recvonly"))


async def _error(resp: ClientResponse, status: int, pattern: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status and pattern in body["error"], body
    return body


def _clean(state: ServerState) -> None:
    assert not state.peers and not len(state.rooms) and state.negotiating == 0
    assert not state.clients.negotiating


# ------------------------------------------------------------------ offers aiortc cannot answer


def _without_directions(sdp: str) -> str:
    return "\r\n".join(
        line for line in sdp.split("\r\n") if line not in ("a=sendrecv", "a=recvonly")
    )


async def test_offers_aiortc_cannot_answer_are_400s_naming_the_problem(
    serve: Serve, sdp: str, caplog: pytest.LogCaptureFixture
) -> None:
    live = await serve()
    caplog.set_level(logging.DEBUG)
    cases = [
        # aiortc's createAnswer: "ValueError: None is not in list" (a 500 before)
        (_without_directions(sdp), "media section 1 (audio) has no direction"),
        # "Media sections in answer do not match offer", or an AttributeError
        (sdp.replace("a=mid:1", "a=mid:0"), "media section 2 (video) repeats a=mid:0"),
        ("\r\n".join(x for x in sdp.split("\r\n") if not x.startswith("a=mid")), "no a=mid"),
    ]
    for text, pattern in cases:
        await _error(await live.offer({"type": "offer", "sdp": text}), 400, pattern)
    nested = b'{"type": "offer", "sdp": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    await _error(await live.offer(nested), 400, "not JSON")
    _clean(live.state)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_whatever_aiortc_refuses_after_our_checks_is_a_400_logged_at_info(
    serve: Serve, sdp: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backstop for what ``parse_offer`` does not know: any aiortc exception while answering
    an offer is the offer's fault, one INFO line, no traceback."""
    live = await serve()

    async def refuse(self: RTCPeerConnection) -> None:
        raise ValueError("Media sections in answer\ndo not match offer")

    monkeypatch.setattr(RTCPeerConnection, "createAnswer", refuse)
    caplog.set_level(logging.DEBUG)
    resp = await live.offer({"type": "offer", "sdp": sdp})
    body = await _error(resp, 400, "unusable SDP offer")
    assert body["error"] == "unusable SDP offer: Media sections in answer do not match offer"
    _clean(live.state)
    refused = [r for r in caplog.records if "offer refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.INFO
    assert not refused[0].exc_info
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ no log flood


def _mutations(sdp: str, count: int, seed: int) -> Iterator[bytes]:
    """``count`` malformed offer bodies: SDP lines dropped, doubled, swapped, garbled or cut,
    sections repeated, fields of the wrong type, bodies that are not JSON."""
    rng = random.Random(seed)
    lines = sdp.rstrip("\r\n").split("\r\n")
    junk = ["", "x", "a=", "m=audio", "a=mid:0", "a=sendrecv", "c=IN IP4", "\x00\xff", "é" * 9]
    for _ in range(count):
        text = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text))
            match rng.randrange(6):
                case 0:
                    del text[i]
                case 1:
                    text.insert(i, text[i])
                case 2:
                    j = rng.randrange(len(text))
                    text[i], text[j] = text[j], text[i]
                case 3:
                    text[i] = rng.choice(junk)
                case 4:
                    text[i] = text[i][: rng.randrange(len(text[i]) + 1)]
                case _:
                    text += text[i:]
        fields: dict[str, Any] = {"type": "offer", "sdp": "\r\n".join(text) + "\r\n"}
        roll = rng.random()
        if roll < 0.1:
            fields[rng.choice(["type", "sdp", "role", "room"])] = rng.choice(
                [None, 7, 1e308, [], {}, True, "viewer", "x\n", "ü" * 70]
            )
        if roll > 0.95:
            yield rng.choice([b"", b"{", b"[]", b"\xff\xfe", b'{"type": "offer"' * 50])
        else:
            yield json.dumps(fields).encode()


RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the HTTP port
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 10_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad\x00Name: 1\r\n\r\n",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"GET /%zz%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /sessions/%00%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /sessions/" + b"z" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE AFTER A GOOD ONE\r\n\r\n",
    b"POST /offer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
]


async def _raw(url: str, payload: bytes) -> list[int]:
    """``payload`` on a fresh connection; the statuses of what came back before it closed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(payload)
        await writer.drain()
        answer = await within(reader.read(), 10.0, "the end of a refused connection")
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    return [int(s) for s in re.findall(rb"^HTTP/1\.1 (\d{3}) ", answer, re.MULTILINE)]


async def test_malformed_requests_are_4xx_and_log_no_error(
    serve: Serve, sdp: str, caplog: pytest.LogCaptureFixture
) -> None:
    """300 malformed offers and a set of broken HTTP requests: all 4xx (or 200 where a
    mutation left the offer usable), no ERROR and no traceback in the log."""
    unlimited = {"offers_burst": 1000, "max_pending_per_client": 1000, "max_pending": 1000}
    unlimited.update(max_sessions=1000, max_rooms=1000)
    live = await serve(keepalive_timeout_s=0.5, **unlimited)
    caplog.set_level(logging.DEBUG)
    statuses: list[int] = []
    for body in _mutations(sdp, 300, seed=11):
        statuses.append((await live.offer(body)).status)
    for payload in RAW_REQUESTS:
        statuses += await _raw(live.url, payload + b"\r\n" * 2)
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    assert statuses.count(400) > 150  # most mutations break the offer; the rest are usable
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]
    traced = [r for r in caplog.records if r.levelno >= logging.INFO and r.exc_info]
    assert not traced, [r.getMessage() for r in traced]
    assert not [r for r in caplog.records if "Traceback" in r.getMessage()]
    # The server still works: a good offer is answered.
    assert (await live.offer({"type": "offer", "sdp": sdp})).status == 200


# ------------------------------------------------------------------ offers per minute


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_offers_per_client_per_minute_are_429_with_retry_after(
    serve: Serve, sdp: str
) -> None:
    live = await serve(offers_burst=3, offers_per_minute=30)
    clock = _Clock()
    live.state.clients.offers = RateLimiter(30, 3, clock)
    bad = {"type": "offer", "sdp": "v=0"}  # refused offers spend the budget too
    for _ in range(3):
        assert (await live.offer(bad)).status == 400
    resp = await live.offer({"type": "offer", "sdp": sdp})
    await _error(resp, 429, "too many offers from this address")
    assert resp.headers["Retry-After"] == "2"  # 30 a minute: one every 2 s
    assert (await live.offer(bad, address=B)).status == 400  # another client: its own budget
    clock.now += 2.0
    assert (await live.offer(bad)).status == 400
    await _error(await live.offer(bad), 429, "too many offers")
    # Only offers are counted.
    async with live.http().get(f"{live.url}/healthz") as resp:
        assert resp.status == 200


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(serve: Serve) -> None:
    live = await serve(offers_burst=1, trusted_proxies=(A,))
    bad = {"type": "offer", "sdp": "v=0"}
    for client in ("203.0.113.5", "203.0.113.6"):
        assert (await live.offer(bad, **{"X-Forwarded-For": client})).status == 400
    await _error(await live.offer(bad, **{"X-Forwarded-For": "203.0.113.5"}), 429, "too many")
    # What a client claims before the proxy's own entry is not believed.
    spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.6"}
    await _error(await live.offer(bad, **spoofed), 429, "too many")
    # A client that is not a trusted proxy cannot pick its address.
    assert (await live.offer(bad, address=B, **{"X-Forwarded-For": "192.0.2.9"})).status == 400
    await _error(await live.offer(bad, address=B, **{"X-Forwarded-For": "192.0.2.1"}), 429, "")


def test_client_address() -> None:
    plain = ClientLimits(ServerConfig())
    proxied = ClientLimits(ServerConfig(trusted_proxies=("10.0.0.0/8", "::1")))

    def ask(
        limits: ClientLimits, remote: str, forwarded: str | None, internal: bool = False
    ) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
        request = make_mocked_request("POST", "/offer", headers=headers)
        request = request.clone(remote=remote)
        return client_address(request, limits, internal)

    assert ask(plain, "192.0.2.1", "203.0.113.5") == "192.0.2.1"
    assert ask(proxied, "10.1.2.3", "203.0.113.5") == "203.0.113.5"
    assert ask(proxied, "10.1.2.3", "198.51.100.7, 203.0.113.5, 10.9.9.9") == "203.0.113.5"
    assert ask(proxied, "10.1.2.3", "not an address") == "10.1.2.3"
    assert ask(proxied, "10.1.2.3", None) == "10.1.2.3"
    assert ask(proxied, "::1", "2001:db8::1") == "2001:db8::1"
    assert ask(proxied, "192.0.2.1", "203.0.113.5") == "192.0.2.1"  # not a proxy
    # From another worker: the client the receiving worker saw.
    assert ask(plain, "127.0.0.1", "203.0.113.5", internal=True) == "203.0.113.5"


# ------------------------------------------------------------------ offers that never connect


async def test_a_client_spamming_offers_cannot_lock_out_another(serve: Serve, sdp: str) -> None:
    """Client A sends 20 offers it never connects: two hold a slot (until the connect timeout
    closes them), the rest are 429 at once; client B still gets in; past ``max_pending`` in
    all, 503."""
    live = await serve(max_pending_per_client=2, max_pending=3, connect_timeout_s=1.0)
    body = {"type": "offer", "sdp": sdp}
    spam = await asyncio.gather(*(live.offer(body) for _ in range(20)))
    statuses = sorted(r.status for r in spam)
    assert statuses.count(200) == 2 and statuses.count(429) == 18, statuses
    refused = next(r for r in spam if r.status == 429)
    await _error(refused, 429, "this address has 2 offers still connecting")
    assert refused.headers["Retry-After"] == "1"
    assert (await live.offer(body, address=B)).status == 200  # B is not locked out
    await _error(await live.offer(body, address=C), 503, "too many sessions are connecting")
    state = live.state
    await eventually(lambda: not state.peers, "the unconnected offers closed")
    assert (await live.offer(body)).status == 200  # A's offers were given back
    await eventually(lambda: not state.peers, "the last one closed")
    _clean(state)


@pytest.mark.slow
async def test_a_connected_session_is_not_pending(serve: Serve) -> None:
    live = await serve(max_pending_per_client=1, connect_timeout_s=5.0)
    first = LoopbackClient(live.url, speech_like([(0.2, 1.0)], 3.0), on_video=FrameWatch())
    await first.connect(live.http())
    try:
        await frames(first).wait_for(3)
        second = LoopbackClient(live.url, speech_like([(0.2, 1.0)], 3.0))
        await second.connect(live.http())  # the first no longer counts as pending
        await second.aclose()
    finally:
        await first.aclose()


# ------------------------------------------------------------------ capacity: 503


async def test_capacity_limits_are_503_with_retry_after(
    serve: Serve, sdp: str, viewer_sdp: str
) -> None:
    live = await serve(max_rooms=1, max_viewers_per_room=1, max_viewers=2, max_pending=10)
    first = await live.offer({"type": "offer", "sdp": sdp, "room": "one"})
    assert first.status == 200
    resp = await live.offer({"type": "offer", "sdp": sdp}, address=B)
    await _error(resp, 503, "room limit")
    assert resp.headers["Retry-After"] == "5"
    viewer = {"type": "offer", "sdp": viewer_sdp, "role": "viewer", "room": "one"}
    assert (await live.offer(viewer, address=B)).status == 200
    resp = await live.offer(viewer, address=C)
    await _error(resp, 503, "room is at its viewer limit")
    assert resp.headers["Retry-After"] == "5"


async def test_viewers_in_all_rooms_are_limited(serve: Serve, sdp: str, viewer_sdp: str) -> None:
    live = await serve(max_viewers_per_room=5, max_viewers=1, max_pending=10)
    for room, address in (("one", A), ("two", B)):
        resp = await live.offer({"type": "offer", "sdp": sdp, "room": room}, address=address)
        assert resp.status == 200
    viewer = {"type": "offer", "sdp": viewer_sdp, "role": "viewer", "room": "one"}
    assert (await live.offer(viewer, address=C)).status == 200
    resp = await live.offer({**viewer, "room": "two"}, address=C)
    await _error(resp, 503, "server is at its viewer limit")


# ------------------------------------------------------------------ idle and overlong sessions


async def _closed(client: LoopbackClient, timeout_s: float) -> None:
    await eventually(
        lambda: client.pc.connectionState in ("closed", "failed"),
        "the client seeing its connection closed",
        timeout_s,
    )


@pytest.mark.slow
async def test_a_publisher_without_audio_or_viewers_is_closed_when_idle(serve: Serve) -> None:
    """Both publishers' mics send nothing at all; the one whose room has a viewer stays."""
    live = await serve(idle_session_s=1.0)
    silent = ((0.0, 3600.0),)  # every packet of the clip is lost
    alone = LoopbackClient(live.url, speech_like([], 1.0), mic_gaps=silent)
    watched = LoopbackClient(live.url, speech_like([], 1.0), mic_gaps=silent)
    await alone.connect(live.http())
    await watched.connect(live.http(B))
    viewer = LoopbackClient(
        live.url, role="viewer", room=watched.answer["room"], on_video=FrameWatch()
    )
    await viewer.connect(live.http(C))
    try:
        await _closed(alone, 10.0)
        assert alone.session_id not in live.state.peers
        # Two more seconds of frames for the viewer: twice the idle limit, and still there.
        await frames(viewer).wait_for(frames(viewer).count + 50)
        assert watched.session_id in live.state.peers
        assert watched.pc.connectionState == "connected"
    finally:
        for client in (alone, watched, viewer):
            await client.aclose()


@pytest.mark.slow
async def test_sessions_end_at_max_session_s(serve: Serve) -> None:
    live = await serve(max_session_s=1.0)
    client = LoopbackClient(live.url, speech_like([(0.1, 3.0)], 3.0), on_video=FrameWatch())
    await client.connect(live.http())
    try:
        await _closed(client, 10.0)
        assert not live.state.peers
    finally:
        await client.aclose()


# ------------------------------------------------------------------ the config


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("server.max_rooms", 0, "limits must be >= 1"),
        ("server.max_pending_per_client", 0, "limits must be >= 1"),
        ("server.offers_per_minute", 0, "offers_per_minute must be > 0"),
        ("server.header_timeout_s", 0, "timeouts must be > 0"),
        ("server.idle_session_s", -1, "idle_session_s and max_session_s must be >= 0"),
        ("server.trusted_proxies", ["10.0.0.0/33"], "'10.0.0.0/33' is no address or network"),
        ("server.trusted_proxies", "10.0.0.1", "must be a list"),
    ],
)
def test_limit_settings_are_checked(key: str, value: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(pattern)):
        load_config(overrides={key: value}, environ={})
