"""WebRTC edges of a live session (aiortc): mic in, avatar video + delayed speech out.

* ``AvatarVideoTrack``: a session subscription as a video track. Frame ``i`` carries
  ``pts = i * 3600`` on the 90 kHz clock, so RTP timestamps follow the frame index (a dropped
  frame leaves a 40 ms hole in the timestamps, not a shift). Pacing is the session's: the
  track returns a frame as soon as the session publishes it.
* ``SpeechAudioTrack``: the same subscription's audio. Every ``VideoFrame`` carries the 640
  samples it was made from, so sending them with the frame keeps voice and lips in sync by
  construction (the voice is delayed exactly as much as the video). Sent as 48 kHz s16 mono
  20 ms frames (one Opus packet each; aiortc gives every packet of one ``encode`` the same
  timestamp, so larger frames would break the stream); ``pts`` at 48 kHz follows the frame
  index. Frames missing from the subscription (dropped) are replaced by silence so the audio
  time line stays on the video's. When Opus was negotiated the track encodes the packets
  itself (``opus=True``, ~0.1 ms per packet on the event loop): aiortc would otherwise make
  an executor round trip per 20 ms packet, and with several sessions' threads competing for
  the GIL those round trips alone fell behind 50 packets/s (the audio queue overflowed at 4
  sessions on 2 cores while the CPU was half idle).
* ``pump_mic``: a remote audio track -> ``MicFrameConverter`` -> ``LiveSession.feed``.
* ``use_loopback_candidates``: aioice gathers host candidates from the interfaces' addresses
  but skips 127.0.0.1, so a browser and a server on one machine (or anything inside a network
  namespace with only ``lo``) never connect. This makes a peer connection gather 127.0.0.1
  too ("add") or only ("only"); see ``ServerConfig.ice_loopback``.
* ``use_low_latency_receive``: aiortc's receive jitter buffer holds 4 audio packets (80 ms)
  before it releases one, and completes a video frame only when the next frame's first packet
  arrives (+40 ms). Opus packets are whole frames and video frames end at the RTP marker bit,
  so each can be released as soon as it is complete; loss then shows as a pts gap, which the
  ingest fills with silence.

The last two reach into aiortc/aioice internals (pinned ``aiortc<2``); each checks that what
it replaces is there and logs a warning and leaves the default in place when it is not.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import av
import cv2
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.fanout import Subscription
from streamer.ingest import MicFrameConverter, StreamResampler
from streamer.types import VideoFrame

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TICKS_PER_FRAME = VIDEO_CLOCK // FPS  # 3600
AUDIO_OUT_RATE = 48_000
AUDIO_PACKET = AUDIO_OUT_RATE // 50  # 960 samples = 20 ms
AUDIO_PER_FRAME = SAMPLES_PER_FRAME * AUDIO_OUT_RATE // SAMPLE_RATE  # 1920
MAX_SILENCE_FILL_FRAMES = FPS  # beyond 1 s of missing frames the audio re-syncs instead

LoopbackMode = Literal["only", "add", "off"]


class AvatarVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, subscription: Subscription) -> None:
        super().__init__()
        self._sub = subscription
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        frame = await self._sub.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        image = frame.image
        if image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0:
            # The encoders want I420; OpenCV's conversion is ~5x faster than the swscale
            # one aiortc would run (and it releases the GIL).
            i420 = np.asarray(
                cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420), np.uint8
            )
            out = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        else:
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        out.pts = frame.index * VIDEO_TICKS_PER_FRAME
        out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return out

    def stop(self) -> None:
        super().stop()
        self._sub.close()


class OpusPacketEncoder:
    """48 kHz s16 mono 20 ms frames -> one Opus packet each, stamped with the frame's pts
    (libopus's own pts start at minus its pre-skip; RTP wants the media time)."""

    def __init__(self, bit_rate: int = 48_000) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = AUDIO_OUT_RATE
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = bit_rate
        codec.time_base = fractions.Fraction(1, AUDIO_OUT_RATE)
        self._codec: Any = codec

    def encode(self, frame: av.AudioFrame) -> list[av.Packet]:
        packets = list(self._codec.encode(frame))
        for packet in packets:
            packet.pts = frame.pts
            packet.time_base = frame.time_base
        return packets


class SpeechAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, subscription: Subscription, opus: bool = False) -> None:
        super().__init__()
        self._sub = subscription
        self._resampler = StreamResampler(SAMPLE_RATE, AUDIO_OUT_RATE)
        self._pending: list[av.AudioFrame] = []
        self._next_index: int | None = None
        self._opus = OpusPacketEncoder() if opus else None
        self.silence_filled = 0

    async def recv(self) -> av.AudioFrame | av.Packet:
        """The next 20 ms: a PCM frame, or its Opus packet when ``opus``."""
        if self._opus is None:
            return await self.next_frame()
        while True:
            packets = self._opus.encode(await self.next_frame())
            if packets:
                return packets[0]

    async def next_frame(self) -> av.AudioFrame:
        while not self._pending:
            frame = await self._sub.get()
            if frame is None:
                self.stop()
                raise MediaStreamError
            self._queue_frame(frame)
        return self._pending.pop(0)

    def _queue_frame(self, frame: VideoFrame) -> None:
        index = frame.index
        if self._next_index is not None and self._next_index < index:
            missing = index - self._next_index
            if missing <= MAX_SILENCE_FILL_FRAMES:
                self.silence_filled += missing
                for i in range(self._next_index, index):
                    self._queue_samples(i, np.zeros(SAMPLES_PER_FRAME, dtype=np.float32))
            else:
                self._resampler.reset()
        elif self._next_index is not None and index < self._next_index:
            return  # an old frame (cannot happen with one publisher; be safe)
        self._queue_samples(index, frame.audio)
        self._next_index = index + 1

    def _queue_samples(self, index: int, samples: np.ndarray) -> None:
        up = self._resampler.process(samples)
        pcm = (np.clip(up, -1.0, 1.0) * 32767.0).astype(np.int16)
        base = index * AUDIO_PER_FRAME
        for k in range(0, len(pcm) - AUDIO_PACKET + 1, AUDIO_PACKET):
            out = av.AudioFrame.from_ndarray(
                pcm[k : k + AUDIO_PACKET].reshape(1, -1), format="s16", layout="mono"
            )
            out.sample_rate = AUDIO_OUT_RATE
            out.pts = base + k
            out.time_base = fractions.Fraction(1, AUDIO_OUT_RATE)
            self._pending.append(out)

    def stop(self) -> None:
        super().stop()
        self._sub.close()


async def pump_mic(
    track: MediaStreamTrack,
    feed: Callable[[np.ndarray, bool], None],
    converter: MicFrameConverter | None = None,
) -> None:
    """Read a remote audio track until it ends, feeding 16 kHz mono into ``feed``."""
    converter = converter or MicFrameConverter()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        samples, discontinuity = converter.convert(frame)
        if len(samples):
            feed(samples, discontinuity)


def make_peer_connection(stun_url: str = "") -> RTCPeerConnection:
    """A peer connection with explicit ICE servers (aiortc would otherwise ask Google's STUN
    server, which is slow or unreachable on closed networks)."""
    servers = [RTCIceServer(urls=stun_url)] if stun_url else []
    return RTCPeerConnection(configuration=RTCConfiguration(iceServers=servers))


def resolve_loopback_mode(setting: str, host: str) -> LoopbackMode:
    if setting == "auto":
        loopback_hosts = {"127.0.0.1", "localhost", "::1"}
        return "only" if host in loopback_hosts or host.startswith("127.") else "off"
    if setting not in ("only", "add", "off"):
        raise ValueError(f"unknown ice_loopback mode {setting!r}")
    return setting  # type: ignore[return-value]


def use_loopback_candidates(pc: RTCPeerConnection, mode: LoopbackMode) -> None:
    """Make every ICE transport of ``pc`` gather 127.0.0.1 (see the module docstring).

    Call after the transceivers exist (answerer: after ``setRemoteDescription``; offerer:
    after ``addTrack``/``addTransceiver``) and before ``setLocalDescription`` gathers.
    """
    if mode == "off":
        return
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.sender.transport.transport.iceGatherer
        connection = getattr(gatherer, "_connection", None)
        needed = ("_local_candidates_start", "_local_candidates", "_components")
        if connection is None or not all(hasattr(connection, a) for a in needed):
            log.warning("aioice internals changed: loopback ICE candidates not added")
            return
        if getattr(connection, "_loopback_mode", None) is not None:
            continue
        connection._loopback_mode = mode
        connection.gather_candidates = _loopback_gatherer(connection, mode)


def _loopback_gatherer(connection: Any, mode: LoopbackMode) -> Callable[[], Awaitable[None]]:
    from aioice.ice import get_host_addresses

    async def gather_candidates() -> None:
        # aioice's own gather_candidates, with 127.0.0.1 in (or as) the address list.
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        addresses: list[str] = []
        if mode == "add":
            addresses = get_host_addresses(
                use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
            )
        addresses.append("127.0.0.1")
        for component in sorted(connection._components):
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=addresses
            )
        connection._local_candidates_end = True

    return gather_candidates


class _ImmediateAudioBuffer(JitterBuffer):
    """Releases every Opus packet at once (each is a whole frame); drops late duplicates."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last_seq: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last_seq is not None and not uint16_gt(packet.sequence_number, self._last_seq):
            return False, None
        self._last_seq = packet.sequence_number
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


class _MarkerVideoBuffer(JitterBuffer):
    """aiortc's video buffer, but a frame is complete at its marker bit (as browsers do)."""

    def __init__(self) -> None:
        super().__init__(capacity=512, is_video=True)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets: list[RtpPacket] = []
        timestamp = None
        origin = self._origin
        if origin is None:
            return None
        for count in range(self._capacity):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                return self._take(packets, timestamp, count)
            packets.append(packet)
            if packet.marker:
                return self._take(packets, timestamp, count + 1)
        return None

    def _take(self, packets: list[RtpPacket], timestamp: int, count: int) -> JitterFrame:
        frame = JitterFrame(
            data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
            timestamp=timestamp,
        )
        self.remove(count)
        return frame


def use_low_latency_receive(pc: RTCPeerConnection) -> None:
    """Swap aiortc's receive jitter buffers for the low-latency ones (module docstring).

    Call after the transceivers exist and before media flows.
    """
    attr = "_RTCRtpReceiver__jitter_buffer"
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if not isinstance(getattr(receiver, attr, None), JitterBuffer):
            log.warning("aiortc internals changed: default receive jitter buffer kept")
            return
        kind = transceiver.kind
        setattr(
            receiver, attr, _ImmediateAudioBuffer() if kind == "audio" else _MarkerVideoBuffer()
        )


async def close_quietly(pc: RTCPeerConnection) -> None:
    try:
        await pc.close()
    except Exception:
        log.debug("closing a peer connection failed", exc_info=True)
    # aiortc stops senders' tasks on close; give them a turn to finish.
    await asyncio.sleep(0)
