"""A viewer of a Janus VideoRoom through Janus' HTTP API, with aiortc (what a viewer's page does
with janus.js): create a session, attach the VideoRoom plugin, join the room's publisher as a
subscriber, answer Janus' offer, read the video.

Test support for tests/test_broadcast_sfu.py (run inside its network namespace).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

EVENT_POLL_S = 5  # Janus' long poll (maxev=1) answers within 30 s; ours are short


class JanusError(Exception):
    """Janus answered a request with an error."""


@dataclass
class JanusViewer:
    """``base``: Janus' HTTP API (``http://host:8088/janus``); ``room``: the VideoRoom id."""

    base: str
    room: int
    frames: list[np.ndarray] = field(default_factory=list)  # decoded RGB, at most ``keep``
    keep: int = 8
    received: int = 0
    _pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    _session: str = ""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _post(self, http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
        body = {**body, "transaction": secrets.token_hex(6)}
        async with http.post(f"{self.base}{path}", json=body) as resp:
            answer = await resp.json(content_type=None)
        if answer.get("janus") == "error":
            raise JanusError(str(answer.get("error")))
        return answer

    async def _event(self, http: aiohttp.ClientSession, handle: str) -> dict[str, Any]:
        """The next event of ``handle`` (long poll), keep-alives skipped."""
        while True:
            url = f"{self.base}/{self._session}?maxev=1&rid={secrets.token_hex(4)}"
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=EVENT_POLL_S)) as r:
                event = await r.json(content_type=None)
            if isinstance(event, dict) and event.get("janus") == "event":
                if str(event.get("sender")) == handle:
                    return event

    async def publishers(self, http: aiohttp.ClientSession) -> list[int]:
        """The feed ids of the room's publishers."""
        handle = await self._attach(http)
        answer = await self._post(
            http,
            f"/{self._session}/{handle}",
            {"janus": "message", "body": {"request": "listparticipants", "room": self.room}},
        )
        data = answer["plugindata"]["data"]
        return [int(p["id"]) for p in data.get("participants", []) if p.get("publisher")]

    async def _attach(self, http: aiohttp.ClientSession) -> str:
        if not self._session:
            created = await self._post(http, "", {"janus": "create"})
            self._session = str(created["data"]["id"])
        attached = await self._post(
            http, f"/{self._session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        return str(attached["data"]["id"])

    async def watch(self, http: aiohttp.ClientSession, feed: int) -> None:
        """Subscribe to ``feed``; returns once Janus started sending (frames then arrive)."""
        handle = await self._attach(http)
        join = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.room,
            "streams": [{"feed": feed}],
        }
        await self._post(http, f"/{self._session}/{handle}", {"janus": "message", "body": join})
        event = await self._event(http, handle)
        jsep = event.get("jsep")
        if not jsep or jsep.get("type") != "offer":
            raise JanusError(f"no offer in Janus' answer to the join: {event}")

        @self._pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                task = asyncio.ensure_future(self._read(track))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        await self._pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "offer"))
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        answer = {"type": "answer", "sdp": self._pc.localDescription.sdp}
        start = {
            "janus": "message",
            "body": {"request": "start", "room": self.room},
            "jsep": answer,
        }
        await self._post(http, f"/{self._session}/{handle}", start)

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.VideoFrame)
            self.received += 1
            if len(self.frames) < self.keep:
                self.frames.append(frame.to_ndarray(format="rgb24"))

    async def aclose(self, http: aiohttp.ClientSession) -> None:
        await self._pc.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session:
            try:
                await self._post(http, f"/{self._session}", {"janus": "destroy"})
            except (aiohttp.ClientError, JanusError, TimeoutError):
                pass  # Janus drops it after session_timeout anyway
