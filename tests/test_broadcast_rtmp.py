"""RTMP push of a room against a real RTMP server (Debian nginx + libnginx-mod-rtmp on
loopback, started by the test): what nginx received reads back as H.264 + AAC at the room's
size and 25 fps, a keyframe every 2 s, audio within a frame of the video; the push survives
an nginx restart; a URL that refuses or hangs is reported, retried, and blocks nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from broadcast_source import HEIGHT, WIDTH, MarkerSource, av_offsets
from live_fakes import eventually
from nginx_rtmp import NginxRtmp, available, free_port

from streamer.broadcast.kinds import OutputContext
from streamer.broadcast.output import EncodedOutput
from streamer.broadcast.rtmp import KIND as RTMP
from streamer.config import BroadcastConfig

pytestmark = [
    pytest.mark.leakcheck,
    pytest.mark.skipif(not available(), reason="needs scripts/install-media-servers.sh"),
]
FRAME_S = 0.04
FAST_RETRY = BroadcastConfig(
    video_kbps=600,
    connect_timeout_s=1.5,
    stall_timeout_s=1.5,
    reconnect_min_s=0.2,
    reconnect_max_s=0.4,
    finish_timeout_s=5.0,
)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def source() -> AsyncIterator[MarkerSource]:
    markers = MarkerSource()
    yield markers
    await markers.end()


def push(source: MarkerSource, url: str, config: BroadcastConfig = FAST_RETRY) -> EncodedOutput:
    plan = RTMP.plan({"kind": "rtmp", "url": url}, "room", config)
    return RTMP.start(plan, OutputContext("out-test", "room", source, config))


def read_live(url: str, packets: int) -> dict[str, Any]:
    """Play the stream from nginx as a viewer would: codecs, size, rate of what comes."""
    with av.open(url, timeout=(5.0, 5.0)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        got = {"video": 0, "audio": 0}
        for packet in container.demux():
            if packet.size:
                got[packet.stream.type] += 1
            if got["video"] >= packets and got["audio"]:
                break
        return {
            "video": video.codec_context.name,
            "audio": audio.codec_context.name,
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": float(video.average_rate or video.guessed_rate or 0),
            "audio_rate": audio.codec_context.sample_rate,
            "got": got,
        }


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            float(p.pts * p.time_base)
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        ]


async def test_a_pushed_room_reads_back_as_h264_and_aac_in_sync(
    nginx: NginxRtmp, source: MarkerSource
) -> None:
    url = nginx.url("room")
    output = push(source, url)
    source.start(frames=150)  # 6 s
    await eventually(lambda: output.state == "live", "the push going live", timeout_s=10)
    live = await asyncio.to_thread(read_live, url, 10)
    assert (live["video"], live["audio"]) == ("h264", "aac")
    assert live["size"] == (WIDTH, HEIGHT)
    assert live["fps"] == pytest.approx(25.0)
    assert live["audio_rate"] in (44100, 48000)
    await source.finished.wait()
    await output.stop()
    assert output.state == "finished", output.status()
    assert output.counts.frames_encoded == 150 and output.counts.dropped == 0

    recorded = nginx.recordings()
    assert len(recorded) == 1
    keys = keyframe_times(recorded[0])
    gaps = [b - a for a, b in zip(keys, keys[1:], strict=False)]
    assert len(keys) >= 3 and all(g == pytest.approx(2.0, abs=FRAME_S) for g in gaps), keys
    offsets = av_offsets(recorded[0])
    assert len(offsets) >= 4
    assert max(abs(o) for o in offsets) <= FRAME_S, offsets


@pytest.mark.slow
async def test_the_push_survives_an_nginx_restart(nginx: NginxRtmp, source: MarkerSource) -> None:
    output = push(source, nginx.url("room"))
    source.start()
    await eventually(lambda: output.state == "live", "the push going live", timeout_s=10)
    await source.wait_frames(source.published + 25)
    nginx.stop()
    await eventually(lambda: output.state.startswith("error"), "the drop noticed", timeout_s=10)
    nginx.start()
    await eventually(lambda: output.state == "live", "the push live again", timeout_s=10)
    assert output.counts.reconnects >= 1
    encoded = output.counts.frames_encoded
    await eventually(
        lambda: output.counts.frames_encoded >= encoded + 50, "frames after the restart"
    )
    await source.end()
    await output.stop()
    assert output.state.startswith("finished"), output.status()
    after = nginx.recordings()[-1]
    assert len(av_offsets(after)) >= 1  # the second stream plays, markers in sync
    assert max(abs(o) for o in av_offsets(after)) <= FRAME_S


async def test_a_refusing_url_is_an_error_retried_with_back_off(source: MarkerSource) -> None:
    output = push(source, f"rtmp://127.0.0.1:{free_port()}/live/secret-key")
    source.start()
    await eventually(
        lambda: output.counts.reconnects >= 2 and output.state.startswith("error"),
        "two more attempts, refused",
        timeout_s=10,
    )
    status = output.status()
    assert status["state"].startswith("error: ") and "refused" in status["state"].lower()
    assert "secret-key" not in repr(status)
    assert status["target"].endswith("/live/<redacted>")
    await source.end()
    await output.stop()
    assert output.done


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and then says nothing (an ingest that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_a_hanging_url_times_out_and_blocks_nothing(
    silent_server: int, source: MarkerSource
) -> None:
    config = FAST_RETRY
    output = push(source, f"rtmp://127.0.0.1:{silent_server}/live/key", config)
    source.start()
    await eventually(
        lambda: output.state.startswith("error"),
        "the timeout",
        timeout_s=4 * config.connect_timeout_s,
    )
    assert "did not accept the stream within" in output.state
    published = source.published
    await source.wait_frames(published + 10)  # the source ticks on meanwhile
    await source.end()
    await output.stop()
    assert output.done
