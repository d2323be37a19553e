"""The live server end to end over loopback WebRTC, with aiortc as the client.

A WAV is the client's microphone; the client records the avatar it gets back. The server
records each session's motion trace, which says what every frame index should show. Nothing
waits for wall time: each test waits for the frames, session ends or clean-ups it needs, each
wait bounded by a generous timeout that fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer
from live_fakes import (
    FrameWatch,
    SleepyRenderStage,
    eventually,
    fake_stages,
    frames,
    mouth_darkness,
    mouth_probe,
    speech_like,
    stages_under_test,
    stall_network,
    within,
)

from msadtalker.timing import SAMPLE_RATE
from streamer.config import Config, ServerConfig
from streamer.io.trace import read_trace
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.state import STATE, ServerState

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
VIDEO_TICKS = 3600


CLIP_S = 3


@pytest.fixture
def mic_wav(tmp_path: Path) -> Path:
    """3 s: silence, one second of speech from 1.0 s, silence."""
    path = tmp_path / "mic.wav"
    audio = speech_like([(1.0, 2.0)], CLIP_S, rate=SAMPLE_RATE)
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


class Server:
    def __init__(self, server: TestServer, http: aiohttp.ClientSession, probe: Any) -> None:
        self.server = server
        self.http = http
        self.url = str(server.make_url("")).rstrip("/")
        self.openness = probe.openness

    @property
    def state(self) -> ServerState:
        return self.server.app[STATE]

    def client(self, audio: np.ndarray | None = None, **kwargs: object) -> LoopbackClient:
        """A client that keeps the mouth openness of each frame (``frames(client)`` counts)."""
        watch = FrameWatch(self.openness)
        return LoopbackClient(self.url, audio, on_video=watch, **kwargs)  # type: ignore[arg-type]

    async def stats(self, session_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/sessions/{session_id}") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def wait_until_empty(self, timeout_s: float = 10.0) -> None:
        state = self.state
        await eventually(
            lambda: not state.peers and not len(state.rooms),
            f"every peer and room gone (peers left: {list(state.peers)})",
            timeout_s,
        )


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Server]:
    server_config = ServerConfig(
        jitter_ms=20,
        record_dir=str(tmp_path / "traces"),
        peer_timeout_s=1.5,
        # The storm of bad requests comes from one address at once: the per-client limits
        # have tests of their own (test_server_limits.py).
        offers_burst=1000,
        max_pending_per_client=1000,
        max_pending=1000,
    )
    config = Config(server=server_config)
    stages = stages_under_test(config)
    app = make_app(config, stages)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Server(server, http, mouth_probe(stages))
    await server.close()


def _read_mic(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    return np.asarray(audio, dtype=np.float32)


async def test_wav_as_mic_gives_frames_and_mouth_motion_where_the_speech_is(
    live: Server, mic_wav: Path, tmp_path: Path
) -> None:
    client = live.client(_read_mic(mic_wav))
    await client.connect(live.http)
    # The whole 3 s clip has come back, and some of the idling after it.
    await frames(client).wait_for(CLIP_S * 25 + 10)
    sid = client.session_id
    stats = await live.stats(sid)
    async with live.http.delete(f"{live.url}/sessions/{sid}") as resp:
        assert resp.status == 200  # answered once the peer is closed and its trace written
    await client.aclose()

    trace = read_trace(tmp_path / "traces" / f"{sid}.csv")
    received = {f.pts // VIDEO_TICKS: f.value for f in client.video}
    indices = sorted(received)
    # Every frame the server made arrived, in order, none lost or dropped on loopback.
    assert indices == list(range(len(indices)))
    assert len(trace) - 4 <= len(indices) <= len(trace)
    assert stats["session"]["dropped_frames"] == 0
    assert len(trace) >= 3.0 * 25  # the session ran for the whole clip (and some idling)
    # The mouth is open over as many frames as the speech lasts (1 s = 25 frames; counted
    # where it is well open, so the silence ramps and any hold of the last syllable do not
    # count), from where the speech starts (1 s into the clip, which starts with the
    # session give or take the connection), and closed before and after.
    mouth = trace["mouth_open"]
    opened = np.flatnonzero(mouth > 0.5)
    first, last = int(opened[0]), int(opened[-1])
    assert 21 <= last - first + 1 <= 29 and 22 <= first <= 40, (first, last)
    assert mouth[: first - 3].max() < 0.1
    # (a hold of the last syllable decays with a 0.3 s time constant: 20 frames is ~3 of them)
    assert mouth[last + 20 :].max() < 0.1
    # What arrived shows what the server rendered: the mouth in the pixels follows the trace.
    seen = np.array([received[i] for i in indices])
    rendered = trace["mouth_open"][: len(indices)]
    assert np.corrcoef(seen, rendered)[0, 1] > 0.9
    # The returned audio is the speech (delayed): about one second of it is loud.
    audio = np.concatenate([a.samples for a in client.received_audio])
    envelope = np.sqrt(np.convolve(audio**2, np.ones(960) / 960, mode="same"))
    loud_s = (envelope > 0.05).sum() / 48000
    assert 0.7 <= loud_s <= 1.3
    await live.wait_until_empty()


async def test_viewers_watch_the_publishers_avatar(live: Server, mic_wav: Path) -> None:
    publisher = live.client(_read_mic(mic_wav))
    await publisher.connect(live.http)
    room = publisher.answer["room"]
    viewer = live.client(role="viewer", room=room)
    await viewer.connect(live.http)
    lazy = live.client(role="viewer", room=room, read_media=False)  # never reads its tracks
    await lazy.connect(live.http)
    # The viewer has watched the whole second of speech (1.0-2.0 s into the publisher's clip).
    await frames(viewer).wait_for(70)
    info = await live.stats(publisher.session_id)
    assert info["viewers"] == 2
    # Its page maps what it plays to the mic time with its streams' clocks (web/avsync.js):
    # an RTP timestamp of each and the mic time (epoch ms, this machine's clock) it stands for.
    clocks = (await live.stats(viewer.session_id))["clocks"]
    assert {kind: clock["rate"] for kind, clock in clocks.items()} == {
        "audio": 48000,
        "video": 90000,
    }
    assert all(abs(clock["ms"] / 1000 - time.time()) < 10 for clock in clocks.values())
    # A viewer cannot barge in on the publisher.
    async with live.http.post(f"{live.url}/sessions/{viewer.session_id}/interrupt") as resp:
        assert resp.status == 403
    assert len(viewer.video) >= 50
    assert max(f.value for f in viewer.video) > 0.25  # it saw the mouth open
    # Same frames, same pictures: align by content (the viewer joined a little later).
    pub = {f.pts // VIDEO_TICKS: f.value for f in publisher.video}
    view = [f.value for f in viewer.video]
    pub_seq = np.array([pub[i] for i in sorted(pub)])
    best = min(
        float(np.abs(pub_seq[k : k + len(view)] - view[: len(pub_seq) - k]).mean())
        for k in range(0, 40)
    )
    assert best < 0.05
    # The viewer that never reads slowed no one down: the publisher's queues lost nothing.
    assert info["tracks"] and all(track["dropped"] == 0 for track in info["tracks"])
    pub_indices = sorted(pub)
    assert pub_indices == list(range(len(pub_indices)))
    # The publisher leaves: the room closes and its viewers are closed with it.
    await publisher.aclose()
    await live.wait_until_empty()
    await viewer.aclose()
    await lazy.aclose()


async def test_lost_packets_and_a_stalled_mic_never_stall_the_video(live: Server) -> None:
    """60 ms of packets lost at 1.0 s, then nothing at all from 1.6 s to 2.6 s: the video
    keeps coming frame after frame and the avatar goes to rest through the stall."""
    speech = speech_like([(0.3, 3.5)], 3.5)
    client = live.client(speech, mic_gaps=((1.0, 1.06), (1.6, 2.6)))
    await client.connect(live.http)
    await frames(client).wait_for(90)  # 3.6 s: past the stall and the end of the speech
    info = await live.stats(client.session_id)
    stats = info["session"]
    await client.aclose()
    indices = [f.pts // VIDEO_TICKS for f in client.video]
    assert indices == list(range(len(indices)))  # no frame missing, none stuck
    assert len(indices) >= 3.5 * 25 - 10
    ingest = stats["ingest"]
    assert ingest["samples_missing"] >= 0.9 * SAMPLE_RATE  # the stall became silence
    assert stats["dropped_frames"] == 0, stats
    trace = client.video
    # During the stall the mouth closes; before and after it moves.
    arrivals = np.array([f.arrival for f in trace])
    values = np.array([f.value for f in trace])
    assert client.mic is not None
    t = client.mic.capture_time
    stalled = values[
        (arrivals > t(int(2.3 * SAMPLE_RATE))) & (arrivals < t(int(2.65 * SAMPLE_RATE)))
    ]
    speaking = values[
        (arrivals > t(int(0.6 * SAMPLE_RATE))) & (arrivals < t(int(1.5 * SAMPLE_RATE)))
    ]
    # The mouth closes (the hold of the last syllable decays) and stays closed.
    assert len(stalled) >= 6 and stalled[-1] < 0.12
    assert np.all(np.diff(stalled) <= 0.02)
    assert speaking.max() > 0.4
    await live.wait_until_empty()


async def test_a_renderer_slower_than_real_time_still_streams_every_frame(
    tmp_path: Path,
) -> None:
    """Each picture takes 150 ms: the client still gets every frame index, one after the
    other (the last finished picture repeated, counted), and the picture keeps changing."""
    config = Config(server=ServerConfig(jitter_ms=20))
    app = make_app(config, lambda: [*fake_stages(config)[:-1], SleepyRenderStage(0.15)])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            url = str(server.make_url("")).rstrip("/")
            watch = FrameWatch(mouth_darkness)
            client = LoopbackClient(url, speech_like([(0.3, 3.0)], 3.0), on_video=watch)
            await client.connect(http)
            await watch.wait_for(65)
            async with http.get(f"{url}/sessions/{client.session_id}") as resp:
                stats = (await resp.json())["session"]
            await client.aclose()
    finally:
        await server.close()
    indices = [f.pts // VIDEO_TICKS for f in client.video]
    assert len(indices) >= 50 and indices == list(range(len(indices)))
    assert stats["frames_out"] >= len(indices)
    # At most one picture per 150 ms was made; every other frame repeated one, counted.
    assert stats["frames_rendered"] <= stats["frames_out"] / 3 + 2
    assert stats["renders_skipped"] >= stats["frames_out"] - stats["frames_rendered"]
    assert stats["dropped_frames"] >= stats["renders_skipped"]
    assert stats["render_ms_p50"] >= 150.0
    openings = [f.value for f in client.video]
    assert max(openings) > 0.3 and min(openings) < 0.1  # the mouth still moves


async def test_interrupt_over_http_shows_rest_on_the_next_frame(live: Server) -> None:
    """Barge-in while the speech goes on: the first frame made after it shows the mouth
    closed (within one frame), then the avatar speaks again."""
    speech = speech_like([(0.3, 4.0)], 4.0)
    client = live.client(speech)
    await client.connect(live.http)
    await frames(client).wait_for(37)  # 1.5 s: well into the speech
    async with live.http.post(f"{live.url}/sessions/{client.session_id}/interrupt") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["interrupted"] is True
    stats = (await live.stats(client.session_id))["session"]
    await frames(client).wait_for(frames(client).count + 25)  # a second after the barge-in
    await client.aclose()
    assert stats["interrupts"] == 1
    # The tick under way when the barge-in came (``from_tick``) is not published; the first
    # frame made after it comes out of the pipeline's lookahead ``delay`` frames earlier.
    first = body["from_tick"] - stats["pipeline_delay_frames"]
    seen = {f.pts // VIDEO_TICKS: f.value for f in client.video}
    before = [seen[i] for i in range(first - 8, first) if i in seen]
    after = sorted(i for i in seen if i >= first)
    assert max(before) > 0.3  # speaking when interrupted
    assert after[0] <= first + 1 and seen[after[0]] < 0.12, [seen[i] for i in after[:5]]
    assert max(seen[i] for i in after[:40]) > 0.3  # the speech goes on: so does the avatar
    await live.wait_until_empty()


async def test_a_vanished_client_is_cleaned_up_and_others_go_on(live: Server) -> None:
    speech = speech_like([(0.3, 6.0)], 6.0)
    stays = live.client(speech)
    await stays.connect(live.http)
    polite = live.client(speech)
    await polite.connect(live.http)
    ghost = live.client(speech)
    await ghost.connect(live.http)
    for client in (stays, polite, ghost):
        await frames(client).wait_for(5)  # all three are streaming
    sessions = {pid: peer.session for pid, peer in live.state.peers.items()}
    # One hangs up without a word (DTLS close), one disappears: its packets just stop.
    await polite.pc.close()
    for transceiver in ghost.pc.getTransceivers():
        connection = transceiver.sender.transport.transport.iceGatherer._connection
        for protocol in connection._protocols:
            protocol.transport.close()
    before = len(stays.video)
    gone = [sessions[polite.session_id], sessions[ghost.session_id]]
    # The peer is forgotten first, then its session is closed, then its thread released.
    ended = asyncio.gather(*(s.finished.wait() for s in gone))
    await within(ended, 10.0, "end of the sessions of the two that left")
    assert set(live.state.peers) == {stays.session_id}
    await eventually(
        lambda: all(s._executor._shutdown for s in gone), "their sessions' threads released"
    )
    assert not sessions[stays.session_id].finished.is_set()
    await frames(stays).wait_for(before + 11)  # still streaming
    indices = sorted(f.pts // VIDEO_TICKS for f in stays.video)
    assert indices == list(range(len(indices)))
    await stays.aclose()
    await ghost.aclose()
    await live.wait_until_empty()


async def test_a_viewer_dropped_after_a_stall_sees_the_close_when_it_comes_back(
    live: Server,
) -> None:
    """The server drops a viewer whose network stalled (no RTCP for ``peer_timeout_s``); the
    one DTLS close it sends then is lost, so it says so again for a while: once back, the
    viewer sees its connection closed within a few seconds, not after its ICE consent
    expires (~30 s). The publisher streams on throughout."""
    publisher = live.client(speech_like([(0.3, 20.0)], 20.0))
    await publisher.connect(live.http)
    viewer = live.client(role="viewer", room=publisher.answer["room"])
    await viewer.connect(live.http)
    await frames(viewer).wait_for(10)
    stall_network(viewer, True)
    await eventually(lambda: viewer.session_id not in live.state.peers, "the viewer dropped")
    assert viewer.pc.connectionState == "connected"  # it heard nothing of it
    stall_network(viewer, False)
    await eventually(
        lambda: viewer.pc.connectionState == "closed", "the viewer seeing the close", 5.0
    )
    await frames(publisher).wait_for(frames(publisher).count + 10)  # still streaming
    assert set(live.state.peers) == {publisher.session_id}
    await viewer.aclose()
    await publisher.aclose()
    await live.wait_until_empty()


async def test_a_storm_of_bad_requests_leaves_a_live_session_alone(live: Server) -> None:
    """100 bad requests of every kind at once while a session streams: each gets its 4xx
    with a JSON body, none leaves anything behind, the session does not miss a frame."""
    client = live.client(speech_like([(0.3, 5.0)], 5.0))
    await client.connect(live.http)
    await frames(client).wait_for(10)
    before = len(client.video)
    room = client.answer["room"]
    good_sdp = client.pc.localDescription.sdp
    no_mic = good_sdp.replace("a=sendrecv", "a=recvonly")
    base = f"{live.url}"
    bad: list[tuple[str, str, Any, int]] = [
        ("POST", "/offer", b"not json", 400),
        ("POST", "/offer", b"[]", 400),
        ("POST", "/offer", {"type": "offer", "sdp": "v=0\r\nm=audio 9 RTP/AVP 0\r\n"}, 400),
        ("POST", "/offer", {"type": "offer", "sdp": "x" * 300_000}, 413),
        ("POST", "/offer", b"x" * 1_000_000, 413),
        ("POST", "/offer", {"type": "offer", "sdp": no_mic}, 400),
        ("POST", "/offer", {"type": "offer", "sdp": good_sdp, "room": room}, 409),
        ("POST", "/offer", {"type": "offer", "sdp": good_sdp, "role": "viewer", "room": "no"}, 404),
        ("GET", "/sessions/unknown", None, 404),
        ("POST", "/sessions/unknown/interrupt", None, 404),
        ("DELETE", "/sessions/unknown", None, 404),
    ]

    async def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes):
            kwargs["data"] = body
            kwargs["headers"] = {"Content-Type": "application/json"}  # else 415, unread
        elif body is not None:
            kwargs["json"] = body
        async with live.http.request(method, base + path, **kwargs) as resp:
            payload = await resp.json() if resp.content_type == "application/json" else None
            return resp.status, payload

    requests = [bad[i % len(bad)] for i in range(100)]
    answers = await asyncio.gather(*(send(m, p, b) for m, p, b, _ in requests))
    for (_, path, _, status), (got, payload) in zip(requests, answers, strict=True):
        assert got == status, (path, got, payload)
        assert payload is not None and payload["status"] == status and payload["error"]
    await frames(client).wait_for(before + 20)  # the session streamed on through it
    indices = [f.pts // VIDEO_TICKS for f in client.video]
    assert indices == list(range(len(indices)))
    state = live.state
    assert set(state.peers) == {client.session_id} and len(state.rooms) == 1
    assert state.negotiating == 0 and not state.tasks
    await client.aclose()
    await live.wait_until_empty()


async def test_sigterm_drains_sessions_and_keeps_what_was_written(
    tmp_path: Path, mic_wav: Path
) -> None:
    record = tmp_path / "rec"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "tests" / "live_fakes.py"),
        str(record),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            watch = FrameWatch()
            client = LoopbackClient(url, _read_mic(mic_wav), on_video=watch)
            await client.connect(http)
            await watch.wait_for(25)  # the session is under way
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 20)
            await client.aclose()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    (trace_path,) = record.glob("*.csv")
    trace = read_trace(trace_path)
    assert list(trace["frame"]) == list(range(len(trace)))
    # Everything sent was recorded, plus the frames still in the pipeline at the drain.
    sent = max(f.pts // VIDEO_TICKS for f in client.video) + 1
    assert len(trace) >= sent
    assert not list(record.glob(".*tmp"))
