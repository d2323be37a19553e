"""Output kind ``whip`` (``streamer.broadcast.whip_publish``) against a WHIP endpoint of our own
on loopback: an aiohttp route answering with an aiortc peer connection, as an SFU's WHIP
ingest does. The real SFU (Janus + simple-whip-server) is tests/test_broadcast_sfu.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from broadcast_source import MarkerSource
from live_fakes import eventually

from streamer.broadcast.kinds import OutputContext
from streamer.broadcast.registry import KINDS
from streamer.broadcast.targets import OutputTargetError
from streamer.broadcast.whip_publish import KIND, WhipOutput
from streamer.config import BroadcastConfig
from streamer.io.aiortc_workarounds import use_loopback_candidates

TOKEN = "whip-endpoint-token-42"
SDP = "application/sdp"
CONFIG = BroadcastConfig(connect_timeout_s=5.0, reconnect_min_s=0.05, reconnect_max_s=0.1)


@dataclass
class Endpoint:
    """A WHIP ingest: one resource per accepted offer, frames counted per resource."""

    status: int = 201  # what POST answers (201: an answer, else the error)
    silent: bool = False  # answer, then never connect (its peer connection closed at once)
    garbage: bool = False  # a 201 whose body is no SDP
    offers: int = 0
    frames: int = 0
    audio_frames: int = 0
    deleted: list[str] = field(default_factory=list)
    peers: dict[str, RTCPeerConnection] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def post(self, request: web.Request) -> web.Response:
        self.offers += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="bad token")
        if request.content_type != SDP:
            return web.Response(status=415, text="application/sdp only")
        if self.status != 201:
            return web.Response(status=self.status, text="busy")
        if self.garbage:
            headers = {"Location": "/whip/resource/junk"}
            return web.Response(status=201, text="v=0 junk", content_type=SDP, headers=headers)
        pc = RTCPeerConnection()
        resource = f"r{self.offers}"
        self.peers[resource] = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            task = asyncio.ensure_future(self._count(track))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        await pc.setRemoteDescription(offer)
        use_loopback_candidates(pc, "only")
        await pc.setLocalDescription(await pc.createAnswer())
        if self.silent:
            await pc.close()
        return web.Response(
            status=201,
            body=pc.localDescription.sdp.encode(),
            content_type=SDP,
            headers={"Location": f"/whip/resource/{resource}"},
        )

    async def delete(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        self.deleted.append(resource)
        pc = self.peers.pop(resource, None)
        if pc is not None:
            await pc.close()
        return web.Response(status=200)

    async def _count(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                self.frames += 1
            else:
                self.audio_frames += 1

    async def aclose(self) -> None:
        for pc in self.peers.values():
            await pc.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Rig:
    endpoint: Endpoint
    url: str
    source: MarkerSource


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    endpoint = Endpoint()
    app = web.Application()
    app.router.add_post("/whip/endpoint", endpoint.post)
    app.router.add_delete("/whip/resource/{resource}", endpoint.delete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    source = MarkerSource()
    source.start()
    try:
        yield Rig(endpoint, f"http://127.0.0.1:{server.port}/whip/endpoint", source)
    finally:
        await source.end()
        await endpoint.aclose()
        await server.close()


def start(rig: Rig, body: dict[str, Any], output_id: str = "out-1") -> WhipOutput:
    plan = KIND.plan(body, "room-1", CONFIG)
    return KIND.start(plan, OutputContext(output_id, "room-1", rig.source, CONFIG))


async def test_a_room_is_published_and_its_resource_deleted_at_the_end(rig: Rig) -> None:
    output = start(rig, {"url": rig.url, "token": TOKEN})
    try:
        await eventually(lambda: output.state == "live", "live", 10.0)
        await eventually(lambda: rig.endpoint.frames >= 10, "10 frames at the endpoint", 10.0)
        assert rig.endpoint.audio_frames > 0  # the voice travels too
        assert output.status()["frames_encoded"] >= 10
    finally:
        await output.stop()
    assert output.state == "finished" and output.done
    assert rig.endpoint.deleted == ["r1"]
    assert TOKEN not in str(output.status())


async def test_the_room_ending_ends_the_output(rig: Rig) -> None:
    output = start(rig, {"url": rig.url, "token": TOKEN})
    await eventually(lambda: output.state == "live", "live", 10.0)
    await rig.source.end()
    await asyncio.wait_for(output.finished.wait(), 10.0)
    assert output.state == "finished" and rig.endpoint.deleted == ["r1"]


async def test_a_wrong_token_gives_up_at_once_and_a_busy_endpoint_is_retried(rig: Rig) -> None:
    refused = start(rig, {"url": rig.url, "token": "wrong-token"})
    await asyncio.wait_for(refused.finished.wait(), 10.0)
    assert refused.state == "error: the WHIP endpoint answered 401: bad token (gave up)"
    assert rig.endpoint.offers == 1 and "wrong-token" not in str(refused.status())

    rig.endpoint.status = 503
    busy = start(rig, {"url": rig.url, "token": TOKEN}, "out-2")
    try:
        await eventually(lambda: rig.endpoint.offers >= 3, "a second attempt", 10.0)
        assert busy.status()["state"].startswith("error: the WHIP endpoint answered 503")
        rig.endpoint.status = 201
        await eventually(lambda: busy.state == "live", "live once the endpoint accepts", 10.0)
        assert busy.status()["reconnects"] >= 1
    finally:
        await busy.stop()


async def test_stopping_while_ice_connects_ends_at_once_and_deletes(rig: Rig) -> None:
    rig.endpoint.silent = True
    output = start(rig, {"url": rig.url, "token": TOKEN})
    await eventually(lambda: rig.endpoint.offers == 1, "the offer", 10.0)
    assert output.state == "connecting"
    await asyncio.wait_for(output.stop(), 5.0)  # not connect_timeout_s + a retry later
    assert output.state == "finished" and rig.endpoint.deleted == ["r1"]


async def test_an_unusable_answer_is_an_error_and_retried(rig: Rig) -> None:
    rig.endpoint.garbage = True
    output = start(rig, {"url": rig.url, "token": TOKEN})
    try:
        await eventually(lambda: rig.endpoint.offers >= 2, "a second attempt", 10.0)
        assert output.status()["last_error"].startswith("the WHIP answer is unusable")
        assert "junk" in rig.endpoint.deleted  # the resource it made is not left behind
    finally:
        await output.stop()
    assert output.done


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "url: the WHIP endpoint's http:// or https:// URL is required"),
        ({"url": "rtmp://x/app"}, "must be http(s)://host/..., got scheme 'rtmp'"),
        ({"url": "https://user:pw@sfu.example/whip"}, "credentials go in `token`"),
        ({"url": "https:///whip"}, "url: no host"),
        ({"url": "https://sfu.example:99999/whip"}, "url: not a URL"),
        ({"url": "https://sfu.example/w hip"}, "not a usable URL"),
        ({"url": "https://sfu.example/whip", "token": 5}, "token: must be a printable string"),
    ],
)
def test_bad_requests_are_refused_with_what_is_wrong(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(OutputTargetError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        KIND.plan(body, "room-1", CONFIG)


def test_the_kind_is_registered_and_shows_no_query() -> None:
    assert KINDS["whip"] is KIND
    for url, shown in (
        ("https://sfu.example/whip/ep?key=s3cret", "https://sfu.example/<redacted>"),
        ("https://sfu.example/s3cret/webRTC/publish", "https://sfu.example/<redacted>"),
        ("https://sfu.example:8443/", "https://sfu.example:8443"),
        ("http://sfu.example?k=s3cret", "http://sfu.example/<redacted>"),
    ):
        plan = KIND.plan({"url": url, "token": TOKEN}, "r", CONFIG)
        assert plan.shown == shown
        assert TOKEN not in repr(plan)
