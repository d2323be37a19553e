"""WebRTC edges of a live session (aiortc): mic in, avatar video + the speech out.

* ``AvatarVideoTrack``: a session subscription as a video track. Frame ``i`` carries
  ``pts = i * 3600`` on the 90 kHz clock, so RTP timestamps follow the frame index (a dropped
  frame leaves a 40 ms hole in the timestamps, not a shift). Pacing is the session's: the
  track returns a frame as soon as the session publishes it.
* ``SpeechAudioTrack``: the session's voice (``LiveSession.subscribe_voice``), sent as soon
  as it is in, not with its picture: the voice then waits in the receiver's audio buffer
  while the picture is made, instead of the picture waiting for the voice (Chromium holds
  each video frame until its audio plays: with the voice sent alongside, viewers saw the
  picture ~90 ms later than the publisher did). Lips and voice stay in sync because both
  tracks' RTCP sender reports state the mic time their media stands for
  (``content_time_s``, ``aiortc_workarounds.use_content_clock``), so the browser lines them
  up. ``FrameVoice`` sends the voice with the frames instead (sync by construction, for an
  SFU in between). Sent as 48 kHz s16 mono 20 ms frames (one Opus packet each; aiortc gives
  every packet of one ``encode`` the same timestamp, so larger frames would break the
  stream); ``pts`` at 48 kHz is the 16 kHz time line's position x 3, the video's time line.
  Gaps (purged or dropped voice) are filled with silence so the audio time line stays on the
  video's. When Opus was negotiated the track encodes the packets itself (``opus=True``,
  ~0.1 ms per packet on the event loop): aiortc would otherwise make an executor round trip
  per 20 ms packet, and with several sessions' threads competing for the GIL those round
  trips alone fell behind 50 packets/s (the audio queue overflowed at 4 sessions on 2 cores
  while the CPU was half idle).
* ``pump_mic``: a remote audio track -> ``MicFrameConverter`` -> ``LiveSession.feed``.
* ``make_peer_connection``, ``close_quietly``: peer connections with explicit ICE servers,
  closed without raising.
* ``TrackObserver``: both tracks report each frame they hand on (its preparation time and
  the frames still queued), for the server's metrics.

What reaches into aiortc / aioice internals (loopback ICE candidates, low-latency receive
buffers, the offer's directions and codecs) is in ``streamer.io.aiortc_workarounds``.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import av
import cv2
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.fanout import Subscription
from streamer.ingest import MicFrameConverter, StreamResampler
from streamer.io.aiortc_workarounds import PeerConnection
from streamer.types import VideoFrame, VoiceChunk

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TICKS_PER_FRAME = VIDEO_CLOCK // FPS  # 3600
AUDIO_OUT_RATE = 48_000
AUDIO_PACKET = AUDIO_OUT_RATE // 50  # 960 samples = 20 ms
MAX_SILENCE_FILL_SAMPLES = SAMPLE_RATE  # beyond 1 s missing the audio re-syncs instead


# Wall-clock time (Unix seconds) of time line position 0, once the session has started
# (``LiveSession.epoch_s``).
Epoch = Callable[[], float | None]


class TrackObserver(Protocol):
    """Told of every frame a track hands on: ``kind`` ("video" / "audio"), the seconds spent
    preparing it (video: the I420 conversion; audio: resampling and the Opus encoding),
    and the frames still queued in the track's subscription."""

    def frame_sent(self, kind: str, encode_s: float, queued: int) -> None: ...


class AvatarVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        subscription: Subscription[VideoFrame],
        observer: TrackObserver | None = None,
        epoch: Epoch | None = None,
    ) -> None:
        super().__init__()
        self._sub = subscription
        self._observer = observer
        self._epoch = epoch
        # Wall-clock time (Unix seconds) of the mic audio the last frame shows: what our RTCP
        # sender reports say the frame's RTP timestamp stands for (``use_content_clock``).
        self.content_time_s: float | None = None
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        frame = await self._sub.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        started = time.perf_counter()
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
        epoch_s = self._epoch() if self._epoch is not None else None
        if epoch_s is not None:
            self.content_time_s = epoch_s + frame.index / FPS
        self.sent += 1
        if self._observer is not None:
            self._observer.frame_sent("video", time.perf_counter() - started, len(self._sub))
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


class VoiceSource(Protocol):
    """Where a ``SpeechAudioTrack`` takes its voice: a session's voice subscription, or
    ``FrameVoice`` over a frame subscription."""

    async def get(self) -> VoiceChunk | None: ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


class FrameVoice:
    """The voice carried by frames (each ``VideoFrame`` holds the 640 samples it was made
    from): sent with its picture, so voice and lips stay in sync by construction, for
    receivers that cannot be trusted to sync two streams themselves (an SFU in between)."""

    def __init__(self, frames: Subscription[VideoFrame]) -> None:
        self._frames = frames

    async def get(self) -> VoiceChunk | None:
        frame = await self._frames.get()
        if frame is None:
            return None
        return VoiceChunk(frame.index * SAMPLES_PER_FRAME, frame.audio)

    def close(self) -> None:
        self._frames.close()

    def __len__(self) -> int:
        return len(self._frames)


class SpeechAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self,
        voice: VoiceSource,
        opus: bool = False,
        observer: TrackObserver | None = None,
        epoch: Epoch | None = None,
    ) -> None:
        super().__init__()
        self._voice = voice
        self._observer = observer
        self._resampler = StreamResampler(SAMPLE_RATE, AUDIO_OUT_RATE)
        self._pending: deque[av.AudioFrame] = deque()
        self._next_position: int | None = None  # the 16 kHz position the next chunk starts at
        self._carry = np.zeros(0, dtype=np.int16)  # resampled samples short of a packet
        self._carry_pts = 0  # the 48 kHz pts of ``_carry[0]``
        self._opus = OpusPacketEncoder() if opus else None
        self._encode_s: float | None = None  # the chunk being sent: resampling + encoding
        self._epoch = epoch
        self.content_time_s: float | None = None  # see AvatarVideoTrack.content_time_s
        self.silence_filled = 0  # 16 kHz samples of silence put into gaps

    async def recv(self) -> av.AudioFrame | av.Packet:
        """The next 20 ms: a PCM frame, or its Opus packet when ``opus``."""
        if self._opus is None:
            return await self.next_frame()
        while True:
            pcm = await self.next_frame()
            started = time.perf_counter()
            packets = self._opus.encode(pcm)
            self._encode_s = (self._encode_s or 0.0) + time.perf_counter() - started
            if packets:
                return packets[0]

    async def next_frame(self) -> av.AudioFrame:
        while not self._pending:
            chunk = await self._voice.get()
            if chunk is None:
                self.stop()
                raise MediaStreamError
            self._report()  # the previous chunk's packets are all handed on
            started = time.perf_counter()
            self._queue_chunk(chunk)
            self._encode_s = time.perf_counter() - started
        frame = self._pending.popleft()
        epoch_s = self._epoch() if self._epoch is not None else None
        if epoch_s is not None and frame.pts is not None:
            self.content_time_s = epoch_s + frame.pts / AUDIO_OUT_RATE
        return frame

    def _report(self) -> None:
        if self._observer is not None and self._encode_s is not None:
            self._observer.frame_sent("audio", self._encode_s, len(self._voice))
        self._encode_s = None

    def _queue_chunk(self, chunk: VoiceChunk) -> None:
        start, audio = chunk.start, np.asarray(chunk.audio, dtype=np.float32)
        expected = self._next_position
        if expected is None:
            self._restart(start)
        elif start > expected:
            missing = start - expected
            if missing <= MAX_SILENCE_FILL_SAMPLES:
                # Keep the time line: what never reached us (dropped, purged) is silence.
                self.silence_filled += missing
                self._queue_samples(np.zeros(missing, dtype=np.float32))
            else:
                self._restart(start)
        elif start < expected:
            audio = audio[expected - start :]  # already sent (cannot happen with one session)
            start = expected
        if len(audio):
            self._queue_samples(audio)
            self._next_position = start + len(audio)

    def _restart(self, position: int) -> None:
        """Continue at ``position`` without the samples in between (a long gap)."""
        self._resampler.reset()
        self._carry = np.zeros(0, dtype=np.int16)
        self._carry_pts = position * AUDIO_OUT_RATE // SAMPLE_RATE
        self._next_position = position

    def _queue_samples(self, samples: np.ndarray) -> None:
        up = self._resampler.process(samples)
        pcm = (np.clip(up, -1.0, 1.0) * 32767.0).astype(np.int16)
        data = np.concatenate([self._carry, pcm]) if len(self._carry) else pcm
        whole = len(data) - len(data) % AUDIO_PACKET
        for k in range(0, whole, AUDIO_PACKET):
            out = av.AudioFrame.from_ndarray(
                data[k : k + AUDIO_PACKET].reshape(1, -1), format="s16", layout="mono"
            )
            out.sample_rate = AUDIO_OUT_RATE
            out.pts = self._carry_pts + k
            out.time_base = fractions.Fraction(1, AUDIO_OUT_RATE)
            self._pending.append(out)
        self._carry = data[whole:]
        self._carry_pts += whole

    def stop(self) -> None:
        super().stop()
        self._voice.close()


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
    return PeerConnection(configuration=RTCConfiguration(iceServers=servers))


async def close_quietly(pc: RTCPeerConnection) -> None:
    try:
        await pc.close()
    except Exception:
        log.debug("closing a peer connection failed", exc_info=True)
    # aiortc stops senders' tasks on close; give them a turn to finish.
    await asyncio.sleep(0)
