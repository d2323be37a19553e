"""The per-room output API (``/rooms/{room}/outputs``): the room's owner adds, lists and
deletes RTMP pushes and recordings; everyone else gets a clear 4xx and other rooms carry on;
a stream key never shows in an answer, a log line or the metrics; ``[broadcast]`` defaults
start with every room and end with it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp.test_utils import TestServer
from live_fakes import eventually, fake_stages, speech_like
from nginx_rtmp import NginxRtmp, available

from streamer.broadcast.kinds import Output
from streamer.clock import RealtimeClock
from streamer.config import AuthConfig, BroadcastConfig, Config, ServerConfig
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.cluster import WORKER_HEADER
from streamer.server.peers import add_local_publisher, close_peer
from streamer.server.state import STATE, Peer, ServerState
from streamer.session import LiveSession

pytestmark = pytest.mark.leakcheck
REPO = Path(__file__).resolve().parents[1]
OWNER = "publisher-token-of-the-owner"
OTHER = "publisher-token-of-somebody-else"
VIEWER = "viewer-token-of-a-viewer-0"
KEY = "live_123456789_SecretStreamKey"


@dataclasses.dataclass
class Server:
    url: str
    state: ServerState
    http: aiohttp.ClientSession

    def open_room(self, room: str, owner_token: str = OWNER) -> Peer:
        config = self.state.config
        session = LiveSession(
            fake_stages(config), RealtimeClock(), config.server, session_id=f"local-{room}"
        )
        session.start()
        peer = add_local_publisher(self.state, session, room)
        peer.owner = self.state.auth.authenticate(owner_token).subject
        return peer

    def output(self, room: str, output_id: str) -> Output:
        output = self.state.broadcasts.get(room, output_id)
        assert output is not None, (room, output_id)
        return output

    async def call(
        self, method: str, path: str, token: str | None = OWNER, body: Any = None
    ) -> tuple[int, dict[str, Any], str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers.get("Location", "")


def server_fixture(broadcast: Callable[[Path], BroadcastConfig]) -> Any:
    @pytest.fixture
    async def fixture(tmp_path: Path) -> AsyncIterator[Server]:
        config = Config(
            server=ServerConfig(jitter_ms=20),
            auth=AuthConfig(publisher_tokens=(OWNER, OTHER), viewer_tokens=(VIEWER,)),
            broadcast=broadcast(tmp_path),
        )
        app = make_app(config, lambda: fake_stages(config))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http:
                yield Server(str(server.make_url("")).rstrip("/"), app[STATE], http)
        finally:
            await server.close()

    return fixture


def _quick(tmp_path: Path) -> BroadcastConfig:
    return BroadcastConfig(
        record_dir=str(tmp_path / "rec"), connect_timeout_s=1.0, reconnect_min_s=0.2
    )


server = server_fixture(_quick)
recording_server = server_fixture(
    lambda tmp_path: dataclasses.replace(_quick(tmp_path), record=True)
)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    if not available():
        pytest.skip("needs scripts/install-media-servers.sh")
    ingest = NginxRtmp(tmp_path / "nginx")
    ingest.start()
    yield ingest
    ingest.stop()


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_the_owner_records_a_room_and_stops_it(server: Server, tmp_path: Path) -> None:
    server.open_room("show")
    status, body, location = await server.call(
        "POST", "/rooms/show/outputs", body={"kind": "record"}
    )
    assert status == 201, body
    assert location == f"/rooms/show/outputs/{body['id']}"
    assert body["kind"] == "record" and body["file"].endswith(".mp4")
    await eventually(
        lambda: server.output("show", body["id"]).status()["frames_encoded"] >= 25,
        "a second recorded",
    )
    status, listed, _ = await server.call("GET", "/rooms/show/outputs")
    assert status == 200 and [o["id"] for o in listed["outputs"]] == [body["id"]]
    assert listed["outputs"][0]["state"] == "live"
    status, final, _ = await server.call("DELETE", location)
    assert status == 200 and final["state"] == "finished", final
    assert frames_in(tmp_path / "rec" / body["file"]) == final["frames_encoded"] >= 25
    assert (await server.call("GET", location))[0] == 404
    assert (await server.call("GET", "/rooms/show/outputs"))[1]["outputs"] == []


async def test_bad_requests_are_clear_4xx_and_other_rooms_carry_on(server: Server) -> None:
    server.open_room("mine")
    other = server.open_room("theirs", owner_token=OTHER)
    status, recording, _ = await server.call(
        "POST", "/rooms/theirs/outputs", OTHER, {"kind": "record"}
    )
    assert status == 201
    cases: list[tuple[str, str, str | None, Any, int, str]] = [
        (
            "POST",
            "/rooms/mine/outputs",
            OWNER,
            {"kind": "rtmp", "url": f"http://x/app/{KEY}"},
            400,
            "scheme must be rtmp:// or rtmps://",
        ),
        ("POST", "/rooms/mine/outputs", OWNER, {"kind": "rtmp"}, 400, "url"),
        ("POST", "/rooms/mine/outputs", OWNER, {"kind": "webm"}, 400, "kind: must be one of"),
        ("POST", "/rooms/mine/outputs", OWNER, ["rtmp"], 400, "JSON object"),
        (
            "POST",
            "/rooms/mine/outputs",
            OWNER,
            {"kind": "record", "path": "/etc/x"},
            400,
            "the server names the file",
        ),
        ("POST", "/rooms/nobody/outputs", OWNER, {"kind": "record"}, 404, "no room 'nobody'"),
        ("POST", "/rooms/theirs/outputs", OWNER, {"kind": "record"}, 404, "no room 'theirs'"),
        ("GET", "/rooms/theirs/outputs", OWNER, None, 404, "no room 'theirs'"),
        ("DELETE", f"/rooms/theirs/outputs/{recording['id']}", OWNER, None, 404, "no room"),
        ("DELETE", "/rooms/mine/outputs/out-nothing", OWNER, None, 404, "no output"),
        ("POST", "/rooms/mine/outputs", VIEWER, {"kind": "record"}, 403, "viewer token"),
        ("POST", "/rooms/mine/outputs", None, {"kind": "record"}, 401, "bearer token"),
        (
            "POST",
            "/rooms/mine/outputs",
            OWNER,
            {"kind": "rtmp", "url": "rtmp://h/a/" + "k" * 9000},
            413,
            "too large",
        ),
    ]
    for method, path, token, body, expected, message in cases:
        status, answer, _ = await server.call(method, path, token, body)
        assert (status, answer["status"]) == (expected, expected), (path, body, answer)
        assert message in answer["error"], answer
        assert KEY not in answer["error"]
    async with server.http.post(
        f"{server.url}/rooms/mine/outputs",
        data=b"kind=rtmp",
        headers={"Authorization": f"Bearer {OWNER}", "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 415
    # The other room's recording went on meanwhile and ends as it should.
    theirs_output = server.output("theirs", recording["id"])
    await eventually(lambda: theirs_output.status()["frames_encoded"] >= 10, "their recording")
    assert other.session.stats.frames_out >= 10
    status, theirs, _ = await server.call("GET", "/rooms/theirs/outputs", OTHER)
    assert theirs["outputs"][0]["state"] == "live"
    status, final, _ = await server.call(
        "DELETE", f"/rooms/theirs/outputs/{recording['id']}", OTHER
    )
    assert final["state"] == "finished"


async def test_a_refusing_url_is_an_output_error_not_a_request_error(server: Server) -> None:
    server.open_room("r")
    url = f"rtmp://127.0.0.1:9/app/{KEY}"  # the discard port: nothing listens
    status, body, location = await server.call(
        "POST", "/rooms/r/outputs", body={"kind": "rtmp", "url": url}
    )
    assert status == 201 and body["target"] == "rtmp://127.0.0.1:9/app/<redacted>"

    output = server.output("r", body["id"])
    await eventually(lambda: output.status()["state"].startswith("error: "), "the refusal")
    states = [str((await server.call("GET", location))[1]["state"])]
    assert states[-1].startswith("error: rtmp://127.0.0.1:9/app/<redacted>"), states
    assert all(KEY not in s for s in states)


async def test_rtmp_push_through_the_api_with_metrics_and_no_key_in_the_log(
    server: Server, nginx: NginxRtmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Its publisher never sends a sample: a silent room pushes the idle avatar, 25 fps.
    server.open_room("live")
    url = nginx.url(KEY)
    status, body, location = await server.call(
        "POST", "/rooms/live/outputs", body={"kind": "rtmp", "url": url}
    )
    assert status == 201 and KEY not in str(body)
    output = server.output("live", body["id"])
    await eventually(lambda: output.status()["frames_encoded"] >= 25, "a second pushed", 15)
    async with server.http.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {OWNER}"}
    ) as resp:
        metrics = await resp.text()
    assert 'msadtalker_broadcast_outputs{kind="rtmp",state="live"} 1.0' in metrics
    encoded = [
        line
        for line in metrics.splitlines()
        if line.startswith('msadtalker_broadcast_frames_encoded_total{kind="rtmp"}')
    ]
    assert encoded and float(encoded[0].split()[-1]) >= 25
    status, final, _ = await server.call("DELETE", location)
    assert final["state"] == "finished" and final["frames_dropped"] == 0
    assert KEY not in caplog.text and "live/<redacted>" in caplog.text
    assert frames_in(nginx.recordings()[0]) >= 25


async def test_default_recording_starts_and_ends_with_the_room(
    recording_server: Server, tmp_path: Path
) -> None:
    peer = recording_server.open_room("auto")
    (output,) = recording_server.state.broadcasts.of_room("auto")
    await eventually(lambda: output.status()["frames_encoded"] >= 10, "the default recording")
    await close_peer(recording_server.state, peer, "hangup")
    await eventually(lambda: output.done, "the recording finished with its room")
    assert output.status()["state"] == "finished"
    assert (
        frames_in(tmp_path / "rec" / output.status()["file"]) == output.status()["frames_encoded"]
    )


@pytest.mark.slow
async def test_with_workers_a_rooms_outputs_answer_from_either_worker(tmp_path: Path) -> None:
    """``serve --workers 2``: the room's outputs are added, listed and stopped through
    whichever worker the kernel hands the connection to; SIGTERM finalises the recording."""
    record = tmp_path / "rec"
    config = tmp_path / "serve.toml"
    config.write_text(f'[server]\ndrain_s = 1.0\n[broadcast]\nrecord_dir = "{record}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli",
        "serve",
        "--workers",
        "2",
        "--port",
        "0",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
    )
    publisher: LoopbackClient | None = None
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert match is not None, line
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            publisher = LoopbackClient(url, speech_like([(0.2, 20.0)], 20.0), room="wroom")
            await publisher.connect(http)
        # A new connection per request: the kernel picks a worker anew each time.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one:
            async with one.post(f"{url}/rooms/wroom/outputs", json={"kind": "record"}) as resp:
                assert resp.status == 201, await resp.text()
                output_id = (await resp.json())["id"]
            answered: set[int] = set()
            for _ in range(40):  # 1 in 2 each: both workers answer long before this ends
                async with one.get(f"{url}/rooms/wroom/outputs/{output_id}") as resp:
                    assert resp.status == 200, await resp.text()
                    answered.add(int(resp.headers[WORKER_HEADER]))
                if len(answered) == 2:
                    break
            assert answered == {0, 1}
            await eventually(lambda: any(record.glob("wroom-*.mp4")), "the recording's file")
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if publisher is not None:
            await publisher.aclose()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert frames_in(next(record.glob("wroom-*.mp4"))) > 0
