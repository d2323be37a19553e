"""The WebRTC edges in isolation: output tracks, receive buffers, loopback mode, and the
reaches into aiortc internals (``streamer.io.aiortc_workarounds``)."""

from __future__ import annotations

import fractions
from dataclasses import replace
from typing import Any

import av
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from live_fakes import FakeRenderStage

from streamer.bench.mouth import rest_motion
from streamer.fanout import FanOut
from streamer.io.aiortc_workarounds import (
    ImmediateAudioBuffer,
    MarkerVideoBuffer,
    PeerConnection,
    finds_private_connect,
    remote_receives,
    resolve_loopback_mode,
    sends_opus,
    use_content_clock,
    use_loopback_candidates,
    use_low_latency_receive,
)
from streamer.io.webrtc import (
    AvatarVideoTrack,
    FrameVoice,
    SpeechAudioTrack,
    make_peer_connection,
)
from streamer.types import VideoFrame, VoiceChunk


def _frame(index: int, level: float = 0.0) -> VideoFrame:
    motion = rest_motion(0.5, index=index)
    features = replace(motion.lips.features, audio=np.full(640, level, dtype=np.float32))
    motion = replace(
        motion, silence=replace(motion.silence, lips=replace(motion.lips, features=features))
    )
    (video,) = FakeRenderStage().push(motion)
    return video


async def test_video_track_stamps_pts_from_the_frame_index() -> None:
    fanout: FanOut[VideoFrame] = FanOut(default_size=8)
    track = AvatarVideoTrack(fanout.subscribe("v"))
    for i in (0, 1, 3):  # frame 2 was dropped
        fanout.publish(_frame(i))
    fanout.end()
    pts = [(await track.recv()).pts for _ in range(3)]
    assert pts == [0, 3600, 3 * 3600]
    with pytest.raises(MediaStreamError):
        await track.recv()


@pytest.mark.parametrize("shape", [(64, 96, 3), (65, 97, 3)], ids=["even", "odd"])
async def test_video_track_frames_keep_the_picture(shape: tuple[int, int, int]) -> None:
    # Even sizes go out as I420 converted here, odd ones as RGB for aiortc to convert: either
    # way the encoder sees the picture (BT.601 limited range, as swscale would make it).
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    image = np.asarray(cv2.GaussianBlur(noise, (0, 0), 2.0), dtype=np.uint8)
    fanout: FanOut[VideoFrame] = FanOut(default_size=8)
    track = AvatarVideoTrack(fanout.subscribe("v"))
    fanout.publish(replace(_frame(0), image=image))
    out = await track.recv()
    assert (out.width, out.height) == (shape[1], shape[0])
    if shape[0] % 2:
        assert out.format.name == "rgb24"
        assert np.array_equal(out.to_ndarray(), image)
        return
    assert out.format.name == "yuv420p"
    reference = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    ours = out.reformat(format="yuv420p")
    luma = np.abs(ours.to_ndarray()[: shape[0]].astype(int) - reference.to_ndarray()[: shape[0]])
    assert luma.max() <= 1
    back = ours.to_ndarray(format="rgb24").astype(int)
    assert np.abs(back - image).mean() < 3.0


async def test_audio_track_sends_20ms_48k_frames_and_fills_dropped_frames() -> None:
    fanout: FanOut[VideoFrame] = FanOut(default_size=8)
    track = SpeechAudioTrack(FrameVoice(fanout.subscribe("a")))
    fanout.publish(_frame(0, 0.5))
    fanout.publish(_frame(2, 0.5))  # frame 1 never reached this subscriber
    fanout.end()
    frames = await _all_frames(track)
    assert [f.samples for f in frames] == [960] * 6
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840, 4800]
    assert all(f.sample_rate == 48000 and f.format.name == "s16" for f in frames)
    levels = [np.abs(f.to_ndarray()).mean() / 32767 for f in frames]
    assert levels[2] < 0.05 and levels[3] < 0.01  # the dropped frame is silence
    assert levels[5] == pytest.approx(0.5, abs=0.02)
    assert track.silence_filled == 640


async def _all_frames(track: SpeechAudioTrack) -> list[av.AudioFrame]:
    frames: list[av.AudioFrame] = []
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return frames
        assert isinstance(frame, av.AudioFrame)  # PCM: aiortc encodes it
        frames.append(frame)


async def test_voice_chunks_keep_their_time_line_position_and_report_the_mic_time() -> None:
    # 20 ms voice blocks, one missing, then one ragged block: pts are the 16 kHz positions x 3
    # (the video's time line), whole 960-sample packets only, the gap silent, and each packet
    # stands for the mic time epoch + pts / 48 kHz (what the sender reports will state).
    fanout: FanOut[VoiceChunk] = FanOut(default_size=8)
    track = SpeechAudioTrack(fanout.subscribe("voice"), epoch=lambda: 1000.0)
    tone = np.full(320, 0.5, np.float32)
    for start in (640, 960, 1600):  # 1280..1600 never came
        fanout.publish(VoiceChunk(start, tone))
    fanout.publish(VoiceChunk(1920, np.full(500, 0.5, np.float32)))  # ends mid-packet
    fanout.end()
    frames: list[av.AudioFrame] = []
    times: list[float | None] = []
    while True:
        try:
            frames.append(await track.next_frame())
        except MediaStreamError:
            break
        times.append(track.content_time_s)
    assert [f.pts for f in frames] == [1920, 2880, 3840, 4800, 5760]
    levels = [np.abs(f.to_ndarray()).mean() / 32767 for f in frames]
    assert levels[2] < 0.05 and levels[0] == pytest.approx(0.5, abs=0.05)
    assert levels[4] == pytest.approx(0.5, abs=0.02)
    assert track.silence_filled == 320
    assert times == [pytest.approx(1000.0 + (f.pts or 0) / 48000) for f in frames]


async def test_content_clock_sender_reports_the_tracks_media_time() -> None:
    pc = RTCPeerConnection()
    sender = pc.addTransceiver("audio").sender
    assert use_content_clock(sender)

    class Track:
        content_time_s: float | None = 1_700_000_000.25

    sender._RTCRtpSender__track = Track()  # type: ignore[attr-defined]
    sender._RTCRtpSender__ntp_timestamp = 123  # type: ignore[attr-defined]  # aiortc: send time
    expected = (1_700_000_000 + 2_208_988_800) << 32 | 1 << 30
    assert sender._RTCRtpSender__ntp_timestamp == expected  # type: ignore[attr-defined]
    # aiortc stores the packet's RTP timestamp next: it pairs with that mic time.
    sender._RTCRtpSender__rtp_timestamp = 4_000_000_000  # type: ignore[attr-defined]
    assert sender._RTCRtpSender__rtp_timestamp == 4_000_000_000  # type: ignore[attr-defined]
    assert vars(sender)["content_anchor"] == (4_000_000_000, 1_700_000_000.25)
    Track.content_time_s = None  # a track without a content clock: aiortc's send time
    sender._RTCRtpSender__ntp_timestamp = 123  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = 5  # type: ignore[attr-defined]
    assert sender._RTCRtpSender__ntp_timestamp == 123  # type: ignore[attr-defined]
    assert vars(sender)["content_anchor"] == (4_000_000_000, 1_700_000_000.25)  # kept
    await pc.close()


def _packet(seq: int, ts: int, marker: bool = False, data: bytes = b"x") -> RtpPacket:
    packet = RtpPacket(sequence_number=seq, timestamp=ts, marker=int(marker))
    packet._data = data  # type: ignore[attr-defined]
    return packet


def test_marker_buffer_releases_a_frame_at_its_last_packet() -> None:
    buffer = MarkerVideoBuffer()
    assert buffer.add(_packet(10, 1000, data=b"a"))[1] is None
    frame = buffer.add(_packet(11, 1000, marker=True, data=b"b"))[1]
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 1000
    frame = buffer.add(_packet(12, 4600, marker=True, data=b"c"))[1]
    assert frame is not None and frame.data == b"c"


def test_audio_buffer_releases_every_packet_and_drops_late_ones() -> None:
    buffer = ImmediateAudioBuffer()
    assert buffer.add(_packet(5, 960))[1] is not None
    assert buffer.add(_packet(7, 2880))[1] is not None  # 6 lost: a pts gap, filled later
    assert buffer.add(_packet(6, 1920))[1] is None  # too late: dropped
    assert buffer.add(_packet(65535, 0))[1] is None  # far behind (wrap-around compare)
    assert buffer.add(_packet(8, 3840))[1] is not None


@pytest.mark.parametrize(
    ("setting", "host", "mode"),
    [
        ("auto", "127.0.0.1", "only"),
        ("auto", "localhost", "only"),
        ("auto", "0.0.0.0", "off"),
        ("add", "0.0.0.0", "add"),
        ("off", "127.0.0.1", "off"),
    ],
)
def test_loopback_mode(setting: str, host: str, mode: str) -> None:
    assert resolve_loopback_mode(setting, host) == mode


async def test_audio_track_encodes_opus_itself_with_the_frames_pts() -> None:
    fanout: FanOut[VideoFrame] = FanOut(default_size=8)
    track = SpeechAudioTrack(FrameVoice(fanout.subscribe("a")), opus=True)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(4 * 640) / 16000).astype(np.float32)
    for i in (0, 1, 3):  # frame 2 never reached this subscriber: silence fills it
        frame = _frame(i)
        features = replace(frame.motion.lips.features, audio=tone[i * 640 : (i + 1) * 640])
        lips = replace(frame.motion.lips, features=features)
        motion = replace(frame.motion, silence=replace(frame.motion.silence, lips=lips))
        fanout.publish(replace(frame, motion=motion))
    fanout.end()
    packets: list[av.Packet[Any]] = []
    while True:
        try:
            packet = await track.recv()
        except MediaStreamError:
            break
        assert isinstance(packet, av.Packet)  # encoded here, not by aiortc
        packets.append(packet)
    assert [p.pts for p in packets] == [960 * k for k in range(8)]
    assert all(p.time_base == fractions.Fraction(1, 48000) for p in packets)
    decoder = av.CodecContext.create("opus", "r")
    decoded = [frame for p in packets for frame in decoder.decode(p)]
    assert sum(frame.samples for frame in decoded) == 8 * 960
    scale = [32767.0 if frame.format.name.startswith("s16") else 1.0 for frame in decoded]
    levels = [np.abs(f.to_ndarray()).mean() / k for f, k in zip(decoded, scale, strict=True)]
    # Opus delays by its 312-sample pre-skip: the fill's second packet is silent throughout.
    assert min(levels[:4]) > 0.2 and levels[5] < 0.02 and levels[7] > 0.2


async def _negotiated(audio: str) -> RTCPeerConnection:
    """An answering peer connection that has taken an offer of ``audio`` + recvonly video
    (Opus first, as browsers and aiortc offer it)."""
    offerer = make_peer_connection()
    offerer.addTransceiver("audio", direction=audio)
    offerer.addTransceiver("video", direction="recvonly")
    use_loopback_candidates(offerer, "only")
    await offerer.setLocalDescription(await offerer.createOffer())
    answerer = make_peer_connection()
    await answerer.setRemoteDescription(offerer.localDescription)
    await offerer.close()
    return answerer


async def test_every_reach_into_aiortc_internals_finds_its_target(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``streamer.io.aiortc_workarounds`` warns and falls back when aiortc changed; with the
    pinned aiortc nothing may fall back."""
    pc = await _negotiated("sendrecv")
    listen_only = await _negotiated("sendonly")
    try:
        use_loopback_candidates(pc, "only")
        use_low_latency_receive(pc)
        audio, video = pc.getTransceivers()
        assert remote_receives(audio) and remote_receives(video) and sends_opus(audio)
        assert not remote_receives(listen_only.getTransceivers()[0])  # a mic, no speaker
        await pc.setLocalDescription(await pc.createAnswer())
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
        ]
        assert candidates and all(" 127.0.0.1 " in line for line in candidates)
        buffers = {
            t.kind: t.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
            for t in pc.getTransceivers()
        }
        assert isinstance(buffers["audio"], ImmediateAudioBuffer)
        assert isinstance(buffers["video"], MarkerVideoBuffer)
        assert not [r for r in caplog.records if "internals changed" in r.getMessage()]
        assert finds_private_connect()
    finally:
        await pc.close()
        await listen_only.close()


async def test_a_connect_step_cut_short_by_close_ends_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiortc's un-awaited connect step raising because the connection closed under it is
    swallowed (it was logged as an ERROR by asyncio); the same error on an open connection,
    a real failure, still raises."""

    async def cut_short(self: RTCPeerConnection) -> None:
        raise InvalidStateError("RTCIceTransport is closed")

    monkeypatch.setattr(RTCPeerConnection, "_RTCPeerConnection__connect", cut_short)
    pc = PeerConnection()
    with pytest.raises(InvalidStateError):
        await pc._RTCPeerConnection__connect()
    await pc.close()
    await pc._RTCPeerConnection__connect()
