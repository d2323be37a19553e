"""A WHIP publisher or WHEP viewer made with aiortc, as OBS or a WHEP player talks to the
server: a bare SDP offer (``application/sdp``), ``201`` + answer + ``Location``, ``DELETE``.
Used by the WHIP/WHEP and TURN tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.io.aiortc_workarounds import use_loopback_candidates
from streamer.io.webrtc import close_quietly
from streamer.io.webrtc_client import PacedAudioTrack
from streamer.server.ice import IceServer, peer_connection


@dataclass
class Answer:
    status: int
    headers: Any  # the response's CIMultiDictProxy (``getall("Link")``)
    body: str


@dataclass
class WishClient:
    """``role="publisher"``: WHIP, sends ``audio`` (16 kHz, looped) and, with ``send_video``,
    a test video as OBS sends its scene. ``"viewer"``: WHEP, receives; ``measure(rgb)`` is
    kept per frame with its pts."""

    role: str
    audio: np.ndarray | None = None
    send_video: bool = False
    measure: Callable[[np.ndarray], Any] | None = None
    ice: Sequence[IceServer] = ()
    relay_only: bool = False
    token: str | None = None
    frames: list[tuple[int, Any]] = field(default_factory=list)  # (pts, measure(rgb))
    first_frame_at: float | None = None  # time.monotonic()
    audio_frames: int = 0
    location: str = ""

    def __post_init__(self) -> None:
        self.pc = peer_connection(self.ice, self.relay_only)
        self._tasks: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._frame = asyncio.Event()

    def headers(self, **more: str) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**auth, **more}

    async def offer(self) -> str:
        pc = self.pc
        if self.role == "publisher":
            assert self.audio is not None
            pc.addTransceiver(PacedAudioTrack(self.audio, loop=True), direction="sendonly")
            if self.send_video:
                pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        else:
            pc.addTransceiver("audio", direction="recvonly")
            pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            task = asyncio.create_task(self._read(track))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self._connected.set()

        if not self.relay_only:
            use_loopback_candidates(pc, "only")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def post(self, http: aiohttp.ClientSession, url: str, sdp: str) -> Answer:
        headers = self.headers(**{"Content-Type": "application/sdp"})
        async with http.post(url, data=sdp.encode(), headers=headers) as resp:
            return Answer(resp.status, resp.headers, await resp.text())

    async def connect(
        self, http: aiohttp.ClientSession, url: str, timeout_s: float = 15.0
    ) -> Answer:
        """Offer, post, apply the answer, wait until connected (``AssertionError`` when
        refused)."""
        answer = await self.post(http, url, await self.offer())
        assert answer.status == 201, (answer.status, answer.body)
        self.location = answer.headers["Location"]
        description = RTCSessionDescription(sdp=answer.body, type="answer")
        await self.pc.setRemoteDescription(description)
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            state = self.pc.connectionState
            raise AssertionError(f"not connected within {timeout_s} s ({state})") from None
        return answer

    async def wait_frames(self, count: int, timeout_s: float = 20.0) -> None:
        async def reach() -> None:
            while len(self.frames) < count:
                self._frame.clear()
                await self._frame.wait()

        try:
            await asyncio.wait_for(reach(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"{count} frames not within {timeout_s} s") from None

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                rgb = frame.to_ndarray(format="rgb24")
                value = self.measure(rgb) if self.measure is not None else None
                self.frames.append((int(frame.pts or 0), value))
                self._frame.set()
            else:
                self.audio_frames += 1

    async def aclose(self) -> None:
        await close_quietly(self.pc)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
