"""The low-latency path's parts, without a browser: causal feature windows, the zero playout
delay header extension, and the browser bench's arithmetic (mouth probe for the page, onset
latencies, minutes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtp import HeaderExtensions, unpack_header_extensions

from msadtalker.audio.mel import log_mel
from msadtalker.timing import SAMPLES_PER_FRAME
from streamer.bench.browser import (
    PageLog,
    chromium_receive_figures,
    frame_timing_per_minute,
    in_run,
    onset_latencies,
    page_figures,
    page_probe,
    sync_per_minute,
)
from streamer.bench.mouth import MouthProbe
from streamer.io.aiortc_workarounds import (
    PLAYOUT_DELAY_URI,
    ZERO_PLAYOUT_DELAY,
    PlayoutDelayExtensionsMap,
    use_zero_playout_delay,
)
from streamer.stages.features import FeatureStage, causal_last_row
from streamer.types import AudioChunk

# ---------------------------------------------------------------- causal feature windows


def test_causal_windows_come_with_the_frames_own_audio_and_end_at_the_newest_final_row() -> None:
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(SAMPLES_PER_FRAME * 60)).astype(np.float32)
    stage = FeatureStage(causal=True)
    assert stage.delay_frames == 0
    frames = []
    position = 0
    for size in [333, 17, 640, 1000, 250] * 30:
        chunk = audio[position : position + size]
        if not len(chunk):
            break
        out = stage.push(AudioChunk(chunk, position))
        position += len(chunk)
        # Every frame whose own audio is complete is out, and no other.
        assert all(f.index < position // SAMPLES_PER_FRAME for f in out)
        frames += out
        assert len(frames) == position // SAMPLES_PER_FRAME
    mel = log_mel(audio)  # the batch rows: final ones are identical in the stream
    for frame in frames[3:]:
        newest = causal_last_row(frame.index)
        # Its STFT frame lies within the audio received by the end of the frame.
        assert 200 * newest + 400 <= SAMPLES_PER_FRAME * (frame.index + 1)
        assert 200 * (newest + 1) + 400 > SAMPLES_PER_FRAME * (frame.index + 1)
        np.testing.assert_allclose(frame.mel[:, 9], mel[newest], atol=1e-5)
        np.testing.assert_allclose(frame.mel[:, 7], mel[newest - 2], atol=1e-5)
        np.testing.assert_allclose(frame.mel[:, 15], mel[newest], atol=1e-5)  # clamped


def test_causal_windows_take_no_lookahead() -> None:
    with pytest.raises(ValueError, match="causal"):
        FeatureStage(lookahead_frames=1, causal=True)


def test_the_live_mesh_path_builds_causal_windows_and_offline_keeps_the_centred_one() -> None:
    from streamer.assembly.motion import build_motion_stages
    from streamer.config import Config

    live = build_motion_stages(Config(), lookahead_ms=0)[0]
    offline = build_motion_stages(Config())[0]
    assert isinstance(live, FeatureStage) and live.causal and live.delay_frames == 0
    assert isinstance(offline, FeatureStage) and not offline.causal


# ---------------------------------------------------------------- zero playout delay


def test_the_playout_delay_extension_rides_on_every_packet() -> None:
    extensions = PlayoutDelayExtensionsMap(7)
    profile, value = extensions.set(HeaderExtensions(abs_send_time=123))
    assert dict(unpack_header_extensions(profile, value)) == {7: ZERO_PLAYOUT_DELAY}
    # A viewer's: min 0, max 500 ms (50 units of 10 ms in the low 12 bits), so A/V sync may
    # still hold the picture.
    synced = PlayoutDelayExtensionsMap(7, max_ms=500)
    profile, value = synced.set(HeaderExtensions(abs_send_time=123))
    assert dict(unpack_header_extensions(profile, value)) == {7: b"\x00\x00\x32"}


async def _offer_with_playout_delay() -> str:
    offerer = RTCPeerConnection()
    offerer.addTransceiver("video", direction="recvonly")
    await offerer.setLocalDescription(await offerer.createOffer())
    sdp = offerer.localDescription.sdp
    await offerer.close()
    # What Chromium offers: the extension in the video section.
    return sdp.replace("a=mid:0\r\n", f"a=mid:0\r\na=extmap:9 {PLAYOUT_DELAY_URI}\r\n", 1)


async def test_an_answer_to_an_offer_with_playout_delay_asks_for_zero() -> None:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=await _offer_with_playout_delay(), type="offer")
        )
        pc.getTransceivers()[0].sender.replaceTrack(VideoStreamTrack())
        assert use_zero_playout_delay(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        assert f"a=extmap:9 {PLAYOUT_DELAY_URI}" in pc.localDescription.sdp
        sender = pc.getTransceivers()[0].sender
        assert isinstance(
            sender._RTCRtpSender__rtp_header_extensions_map,  # type: ignore[attr-defined]
            PlayoutDelayExtensionsMap,
        )
    finally:
        await pc.close()


async def test_an_offer_without_playout_delay_is_answered_as_before() -> None:
    offerer = RTCPeerConnection()
    offerer.addTransceiver("video", direction="recvonly")
    await offerer.setLocalDescription(await offerer.createOffer())
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(offerer.localDescription)
        assert not use_zero_playout_delay(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        assert "playout-delay" not in pc.localDescription.sdp
    finally:
        await pc.close()
        await offerer.close()


# ---------------------------------------------------------------- the browser bench's sums


def _probe() -> MouthProbe:
    closed = np.full((64, 64, 3), 120, np.uint8)
    opened = closed.copy()
    opened[40:50, 20:44] = 30  # a dark open mouth
    return MouthProbe.from_images(closed, opened)


def _page_openness(setup: dict[str, Any], image: np.ndarray) -> float:
    """What web/bench.js computes for a presented picture."""
    box = image[setup["y"] : setup["y"] + setup["h"], setup["x"] : setup["x"] + setup["w"]]
    pixels = box.reshape(-1, 3).astype(np.float64)[setup["index"]]
    closed = np.reshape(setup["closed"], (-1, 3))
    direction = np.reshape(setup["direction"], (-1, 3))
    return float(((pixels - closed) * direction).sum() / setup["norm"])


def test_the_pages_mouth_reading_agrees_with_the_probe() -> None:
    probe = _probe()
    setup = page_probe(probe)
    closed = probe.closed.astype(np.uint8)
    for amount in (0.0, 0.3, 1.0):
        image = closed.astype(np.float32)
        image[probe.mask] += amount * probe.direction
        picture = np.clip(image, 0, 255).astype(np.uint8)
        assert _page_openness(setup, picture) == pytest.approx(probe.openness(picture), abs=0.02)
        assert _page_openness(setup, picture) == pytest.approx(amount, abs=0.02)


def test_onset_latency_is_the_first_open_frame_after_a_closed_one() -> None:
    times = np.arange(0.0, 2000.0, 40.0)
    openness = np.zeros_like(times)
    openness[(times >= 520) & (times < 900)] = 1.0  # opens at 520 ms
    openness[(times >= 1500)] = 1.0  # open from 1500 on
    frames = np.stack([times, openness], axis=1)
    latencies = onset_latencies(np.array([400.0, 1000.0, 1600.0]), frames, 0.5)
    # Open 120 ms after the first onset and 520 ms after the second; the third comes while
    # the mouth is open: not measurable.
    assert latencies == [120.0, 520.0, None]  # frames every 40 ms: open at 520 and 1520


def test_minutes_and_chromium_figures() -> None:
    onsets = np.array([0.0, 30_000.0, 60_000.0, 90_000.0, 121_000.0])
    assert in_run(onsets, 2.0).tolist() == [0.0, 30_000.0, 60_000.0, 90_000.0]
    log = PageLog()
    log.add(
        {
            "onsets": [],
            "frames": [
                [t, 1.0 if 100 <= t % 30_000 < 1000 else 0.0, t - 5.0]
                for t in range(0, 120_000, 40)
            ],
        }
    )
    figures = page_figures(log, in_run(onsets, 2.0), 0.0, 0.5)
    assert [m["minute"] for m in figures["per_minute"]] == [1, 2]
    assert figures["minute_first"]["p50"] == pytest.approx(120.0)
    assert figures["receive_to_presented_ms"]["p50"] == pytest.approx(5.0)
    video = [
        {"jitterBufferDelay": 1.0, "jitterBufferEmittedCount": 100},
        {"jitterBufferDelay": 3.0, "jitterBufferEmittedCount": 200},
    ]
    stats = [{"t_s": 15 * i, "load_1min": 1.0, "rtc": {"video": v}} for i, v in enumerate(video)]
    assert chromium_receive_figures(stats)[0]["video_jitter_buffer_ms"] == 20.0


def test_per_minute_hold_arrival_and_lip_sync() -> None:
    # Frames shown 5 ms after arrival in minute 1 and 25 ms in minute 2, arriving on their
    # RTP clock (which wraps at 2**32 in minute 2): the hold grows, the arrival does not.
    rtp0 = 2**32 - 90 * 60_000
    frames: list[tuple[float, float, float | None, float | None]] = [
        (t + (5.0 if t < 60_000 else 25.0), 0.0, float(t), float((rtp0 + 90 * t) % 2**32))
        for t in range(0, 120_000, 40)
    ]
    timing = frame_timing_per_minute(frames, 0.0)
    assert timing[1] == {"hold_ms_p50": 5.0, "arrival_vs_rtp_ms": 0.0}
    assert timing[2] == {"hold_ms_p50": 25.0, "arrival_vs_rtp_ms": 0.0}
    # The page's lip sync, read every 15 s: its figures per minute (medians).
    stats = [
        {
            "t_s": 15.0 * i,
            "load_1min": 1.0,
            "rtc": {
                "video": {"estimatedPlayoutTimestamp": 1000.0 + i},
                "audio": {"estimatedPlayoutTimestamp": 1000.0},
                "avsync": {"leadMs": 20.0 + i, "voiceLagMs": 90.0, "videoHoldMs": 10 * i},
            },
        }
        for i in range(8)
    ]
    sync = sync_per_minute(chromium_receive_figures(stats))
    assert sync[1] == {"lips_lead_ms": 22.0, "voice_lag_ms": 90.0, "video_hold_set_ms": 20.0}
    assert sync[2]["lips_lead_ms"] == 25.5
