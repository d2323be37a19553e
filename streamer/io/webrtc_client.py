"""A scripted WebRTC client for the live server: a WAV as the mic, the avatar recorded back.

Used by ``msadtalker bench latency|sessions`` and by the server tests; it talks to the server
exactly as the publisher page does (``POST /offer``, sendrecv audio + recvonly video).

``PacedAudioTrack`` plays 16 kHz mono samples as 48 kHz 20 ms frames in real time, the way
a microphone delivers them: frame ``j`` (samples captured over ``[20 j, 20 (j + 1))`` ms) is
handed over at ``start + 20 (j + 1)`` ms; after the clip it keeps sending silence (the mic
stays open). ``capture_time(sample)`` is the wall time a sample was "spoken".
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from msadtalker.timing import SAMPLE_RATE
from streamer.ingest import StreamResampler, frame_to_mono
from streamer.io.aiortc_workarounds import (
    LoopbackMode,
    use_loopback_candidates,
    use_low_latency_receive,
)
from streamer.io.webrtc import OpusPacketEncoder, close_quietly, make_peer_connection

log = logging.getLogger(__name__)

MIC_RATE = 48_000
MIC_PACKET = MIC_RATE // 50  # 960 samples, 20 ms


class PacedAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        samples: np.ndarray,
        rate: int = SAMPLE_RATE,
        stop_after: bool = False,
        gaps: tuple[tuple[float, float], ...] = (),
        opus: bool = False,
        loop: bool = False,
    ) -> None:
        """``gaps``: (start_s, end_s) spans of the clip whose packets are never sent (loss,
        or a mic that stalls); the pts of the next packet jumps over them. ``opus``: hand
        aiortc ready Opus packets (the codec must be Opus), as a browser encodes natively;
        many clients in one process then stay off aiortc's per-packet executor round trip.
        ``loop``: play the clip over and over (a speaker for as long as a soak lasts)."""
        self._repeat = loop
        super().__init__()
        self._opus = OpusPacketEncoder() if opus else None
        self._gaps = gaps
        up = StreamResampler(rate, MIC_RATE).process(np.asarray(samples, dtype=np.float32))
        pad = (-len(up)) % MIC_PACKET
        up = np.concatenate([up, np.zeros(pad, dtype=np.float32)])
        self._pcm = (np.clip(up, -1.0, 1.0) * 32767.0).astype(np.int16)
        self._rate = rate
        self._index = 0
        self._stop_after = stop_after
        self.started_at: float | None = None  # time.monotonic() of the clip's first sample
        self.frames_sent = 0

    @property
    def clip_frames(self) -> int:
        return len(self._pcm) // MIC_PACKET

    def capture_time(self, sample: int) -> float:
        """Wall time (``time.monotonic``) at which input sample ``sample`` was captured."""
        if self.started_at is None:
            raise RuntimeError("the track has not started")
        return self.started_at + sample / self._rate

    async def recv(self) -> av.AudioFrame | av.Packet:
        while True:
            frame = await self._next_frame()
            if self._opus is None:
                return frame
            packets = self._opus.encode(frame)
            if packets:
                return packets[0]

    async def _next_frame(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started_at is None:
            self.started_at = time.monotonic()
        j = self._index
        while any(a <= j * MIC_PACKET / MIC_RATE < b for a, b in self._gaps):
            j += 1  # lost: never sent
        self._index = j
        if self._stop_after and j >= self.clip_frames:
            self.stop()
            raise MediaStreamError
        due = self.started_at + (j + 1) * MIC_PACKET / MIC_RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if j < self.clip_frames or self._repeat:
            k = j % self.clip_frames
            chunk = self._pcm[k * MIC_PACKET : (k + 1) * MIC_PACKET]
        else:
            chunk = np.zeros(MIC_PACKET, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = j * MIC_PACKET
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._index += 1
        self.frames_sent += 1
        return frame


@dataclass
class ReceivedVideo:
    arrival: float  # time.monotonic() when the decoded frame was handed over
    pts: int
    value: Any  # what the client's ``on_video`` returned for the frame (an image, a metric)


@dataclass
class ReceivedAudio:
    arrival: float
    pts: int
    samples: np.ndarray  # mono float32 at the decoder's rate (48 kHz)


@dataclass
class LoopbackClient:
    """One publisher (with ``audio``) or viewer (``room``) connection to a live server.

    ``on_video(rgb) -> value`` decides what is kept per received frame (default: the image).
    """

    base_url: str
    audio: np.ndarray | None = None
    role: str = "publisher"
    room: str | None = None
    loopback: LoopbackMode = "only"
    on_video: Callable[[np.ndarray], Any] | None = None
    keep_audio: bool = True
    decode_video: bool = True  # False: only count frames (no RGB conversion)
    read_media: bool = True
    mic_gaps: tuple[tuple[float, float], ...] = ()
    mic_opus: bool = False  # see PacedAudioTrack
    mic_loop: bool = False  # the clip over and over (PacedAudioTrack's ``loop``)
    token: str | None = None  # sent as ``Authorization: Bearer`` when the server wants one
    video: list[ReceivedVideo] = field(default_factory=list)
    received_audio: list[ReceivedAudio] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)
    answer_headers: dict[str, str] = field(default_factory=dict)  # of the answer's response

    def __post_init__(self) -> None:
        self.pc = make_peer_connection()
        self.mic: PacedAudioTrack | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()

    @property
    def session_id(self) -> str:
        return str(self.answer["session_id"])

    async def connect(self, http: aiohttp.ClientSession, timeout_s: float = 15.0) -> None:
        pc = self.pc
        if self.role == "publisher":
            if self.audio is None:
                raise ValueError("a publisher needs audio")
            self.mic = PacedAudioTrack(
                self.audio, gaps=self.mic_gaps, opus=self.mic_opus, loop=self.mic_loop
            )
            pc.addTransceiver(self.mic, direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if not self.read_media:
                return
            reader = self._read_video(track) if track.kind == "video" else self._read_audio(track)
            task = asyncio.create_task(reader)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self._connected.set()

        use_loopback_candidates(pc, self.loopback)
        use_low_latency_receive(pc)
        await pc.setLocalDescription(await pc.createOffer())
        body: dict[str, Any] = {
            "sdp": pc.localDescription.sdp,
            "type": "offer",
            "role": self.role,
        }
        if self.room is not None:
            body["room"] = self.room
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        # The room in the URL too: a load balancer routes a viewer to the room's instance by
        # it (deploy/nginx/msadtalker-lb.conf); the server reads the body.
        query = {"room": self.room} if self.room is not None else None
        url = f"{self.base_url}/offer"
        async with http.post(url, params=query, json=body, headers=headers) as resp:
            answer = await resp.json()
            self.answer_headers = dict(resp.headers)
            if resp.status != 200:
                raise RuntimeError(f"offer refused: {resp.status} {answer}")
        self.answer = answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def _read_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrival = time.monotonic()
            assert isinstance(frame, av.VideoFrame)
            value: Any = None
            if self.decode_video:
                rgb = frame.to_ndarray(format="rgb24")
                value = self.on_video(rgb) if self.on_video is not None else rgb
            self.video.append(ReceivedVideo(arrival, int(frame.pts or 0), value))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrival = time.monotonic()
            assert isinstance(frame, av.AudioFrame)
            if self.keep_audio:
                mono = frame_to_mono(frame)
                self.received_audio.append(ReceivedAudio(arrival, int(frame.pts or 0), mono))

    async def aclose(self) -> None:
        await close_quietly(self.pc)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
