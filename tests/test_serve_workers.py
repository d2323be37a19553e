"""``msadtalker serve --workers 2``: two server processes behind one port.

The real command as a subprocess (the mesh pipeline, the bundled avatar), aiortc clients over
loopback. Which worker the kernel hands a connection to is not ours to choose: the tests open
fresh connections until the worker that answered (``X-Msadtalker-Worker``) is the one they
need, and the session and room ids say which worker owns them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from live_fakes import eventually, speech_like

from streamer.io.trace import read_trace
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.auth import mint_room_token
from streamer.server.cluster import CREDENTIAL_HEADER, HOP_HEADER, WORKER_HEADER
from streamer.server.ids import parse_id

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
VIDEO_TICKS = 3600
TRIES = 40  # fresh connections until the kernel picks a given worker (1 in 2 each)
DUPLICATE_MID = json.dumps(
    {
        "type": "offer",
        "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=recvonly\r\n",
    }
).encode()


class Serve:
    """``msadtalker serve --workers 2 ARGV`` in a child process; its logs go to a file."""

    def __init__(self, log_path: Path, *argv: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "-v", "serve", "--port", "0", *argv],
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
            env=env,
        )
        self._seen: set[int] = set()  # worker pids, killed in stop() should any outlive it
        self.url = self._read_url()
        self.workers()

    def _read_url(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if match is None:
            self.stop()
            raise AssertionError(f"serve did not start: {line!r}\n{self.log()}")
        return match.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> dict[int, int]:
        """Worker index -> pid of the parent's worker processes (from /proc)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat[1]) == self.proc.pid and b"--worker" in argv:
                found[int(argv[argv.index(b"--worker") + 1])] = int(entry.name)
        self._seen.update(found.values())
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self._seen:
            if alive(pid):  # a failed test must not leave servers behind it
                os.kill(pid, signal.SIGKILL)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    # Every offer of this module comes from 127.0.0.1: the per-client offer budget is
    # tested elsewhere (test_server_limits.py) and must not turn these into 429s.
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "serve.toml"
    config.write_text("[server]\noffers_per_minute = 600\noffers_burst = 200\n")
    server = Serve(folder / "serve.log", "--workers", "2", "--config", str(config))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fresh() -> aiohttp.ClientSession:
    """A client that opens a new connection per request (so the kernel picks anew)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def speech() -> np.ndarray:
    return speech_like([(0.5, 2.5), (3.0, 5.0)], 6.0)


def owner(some_id: str) -> int:
    worker = parse_id(some_id).worker
    assert worker is not None, some_id
    return worker


async def frames_arrive(client: LoopbackClient, count: int, timeout_s: float = 20.0) -> None:
    """Until ``client`` has ``count`` more video frames (a liveness bound, not a speed test).
    Polled: these clients do not decode, so no callback sees their frames."""
    target = len(client.video) + count
    await eventually(lambda: len(client.video) >= target, f"{target} video frames", timeout_s)


async def from_each_worker(
    request: Callable[[aiohttp.ClientSession], Awaitable[tuple[int, Any]]],
) -> dict[int, Any]:
    """``request`` on fresh connections until both workers have received one: worker -> what
    ``request`` returned (its answer's worker header, its result)."""
    seen: dict[int, Any] = {}
    async with fresh() as client:
        for _ in range(TRIES):
            worker, result = await request(client)
            seen.setdefault(worker, result)
            if len(seen) == 2:
                return seen
    raise AssertionError(f"only worker(s) {sorted(seen)} answered in {TRIES} connections")


async def publish(url: str, http: aiohttp.ClientSession, **kwargs: Any) -> LoopbackClient:
    client = LoopbackClient(url, speech(), keep_audio=False, decode_video=False, **kwargs)
    await client.connect(http)
    return client


# ------------------------------------------------------------------ start-up failures


def test_a_second_server_cannot_join_the_port_of_a_running_one(serve: Serve) -> None:
    port = serve.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "serve", "--workers", "2", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2
    where = f"127.0.0.1:{port}"
    expected = f"msadtalker: error: cannot listen on {where}: Address already in use"
    assert done.stderr.strip() == expected


def test_a_worker_that_cannot_start_is_one_line_and_stops_the_others(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_text("not a picture")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["serve", "--workers", "2", "--port", str(port), "--avatar", str(photo)]
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # no URL: the server never was up
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"msadtalker: error: {photo}: not an image (unknown or unsupported format)"]
    # No worker is left behind.
    for entry in Path("/proc").iterdir():
        try:
            argv_seen = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        assert not (b"--worker" in argv_seen and str(port).encode() in argv_seen), argv_seen


# ------------------------------------------------------------------ two workers serving


async def test_publishers_land_on_both_workers_and_answer_from_either(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    # One keep-alive connection: the kernel alone would put both on the same worker.
    first = await publish(serve.url, http)
    second = await publish(serve.url, http)
    clients = [first, second]
    try:
        assert {owner(c.session_id) for c in clients} == {0, 1}
        for client in clients:
            assert owner(client.answer["room"]) == owner(client.session_id)
            await frames_arrive(client, 10)

        for client in clients:

            async def stats(
                session: aiohttp.ClientSession, sid: str = client.session_id
            ) -> tuple[int, Any]:
                async with session.get(f"{serve.url}/sessions/{sid}") as resp:
                    return int(resp.headers[WORKER_HEADER]), (resp.status, await resp.json())

            for status, body in (await from_each_worker(stats)).values():
                assert status == 200 and body["session_id"] == client.session_id
                assert body["role"] == "publisher" and body["session"]["frames_out"] > 0

            async def interrupt(
                session: aiohttp.ClientSession, sid: str = client.session_id
            ) -> tuple[int, Any]:
                async with session.post(f"{serve.url}/sessions/{sid}/interrupt") as resp:
                    return int(resp.headers[WORKER_HEADER]), (resp.status, await resp.json())

            for status, body in (await from_each_worker(interrupt)).values():
                assert status == 200 and body == {
                    "interrupted": True,
                    "session_id": client.session_id,
                    "from_tick": body["from_tick"],
                }
            await frames_arrive(client, 5)  # still streaming after the barge-ins
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def test_a_burst_of_publishers_is_spread_evenly(serve: Serve) -> None:
    # Four offers at once, however the kernel spreads their connections (often all to one
    # worker): placements are decided one at a time per worker, each counting the offers
    # already sent elsewhere, so the workers end up with two each.
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(publish(serve.url, http) for _ in range(4)), return_exceptions=True
        )
        clients = [r for r in results if isinstance(r, LoopbackClient)]
        try:
            assert len(clients) == 4, results
            owners = sorted(owner(c.session_id) for c in clients)
            assert owners == [0, 0, 1, 1]
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))


async def test_a_viewer_of_another_workers_room_gets_frames(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    publisher = await publish(serve.url, http)
    room = publisher.answer["room"]
    viewers: list[LoopbackClient] = []
    try:
        async with fresh() as session:
            for _ in range(TRIES):
                viewer = LoopbackClient(serve.url, role="viewer", room=room, decode_video=False)
                viewers.append(viewer)
                await viewer.connect(session)
                # The viewer lives where the room is, whoever received its offer.
                assert owner(viewer.session_id) == owner(room)
                if int(viewer.answer_headers[WORKER_HEADER]) != owner(room):
                    break
            else:
                raise AssertionError("no viewer offer reached the other worker")
        await frames_arrive(viewer, 10)
        async with http.get(f"{serve.url}/sessions/{publisher.session_id}") as resp:
            assert (await resp.json())["viewers"] == len(viewers)

        # A viewer may not interrupt, whichever worker it asks.
        async def interrupt(session: aiohttp.ClientSession) -> tuple[int, Any]:
            async with session.post(f"{serve.url}/sessions/{viewer.session_id}/interrupt") as r:
                return int(r.headers[WORKER_HEADER]), (r.status, await r.json())

        for status, body in (await from_each_worker(interrupt)).values():
            assert status == 403 and body["status"] == 403 and "publisher" in body["error"]
    finally:
        await asyncio.gather(*(v.aclose() for v in viewers))
        await publisher.aclose()


async def test_a_named_room_has_one_owner_whichever_worker_is_asked(serve: Serve) -> None:
    name = "party-room"
    home = zlib.crc32(name.encode()) % 2
    async with fresh() as session:
        publisher = await publish(serve.url, session, room=name)
        try:
            assert publisher.answer["room"] == name and owner(publisher.session_id) == home
            for _ in range(TRIES):
                rival = LoopbackClient(serve.url, speech(), room=name, read_media=False)
                with pytest.raises(RuntimeError, match="409"):
                    await rival.connect(session)
                await rival.aclose()
                # The refusal was relayed from the owner when another worker took the offer.
                if int(rival.answer_headers[WORKER_HEADER]) != home:
                    break
            else:
                raise AssertionError("no rival offer reached the other worker")
        finally:
            await publisher.aclose()


async def test_hanging_up_through_the_other_worker(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    publisher = await publish(serve.url, http)
    try:
        async with fresh() as session:
            for _ in range(TRIES):
                sid = publisher.session_id
                async with session.delete(f"{serve.url}/sessions/{sid}") as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"closed": True, "session_id": sid}
                    relayed = int(resp.headers[WORKER_HEADER]) != owner(sid)
                async with http.get(f"{serve.url}/sessions/{sid}") as resp:
                    assert resp.status == 404 and (await resp.json())["status"] == 404
                if relayed:
                    break
                # The owner itself took the hang-up: try again with a new session.
                await publisher.aclose()
                publisher = await publish(serve.url, http)
            else:
                raise AssertionError("no hang-up reached the other worker")
    finally:
        await publisher.aclose()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "pattern"),
    [
        ("POST", "/offer", b"not json", 400, "not JSON"),
        ("POST", "/offer", b'{"type": "offer", "sdp": "x"}', 400, "malformed SDP"),
        ("POST", "/offer", b'{"type": "offer", "sdp": "v=0", "role": "viewer"}', 400, "room"),
        # Once a 500 under --workers 2 ("Media sections in answer do not match offer").
        ("POST", "/offer", DUPLICATE_MID, 400, "repeats a=mid:0"),
        ("GET", "/sessions/w0-nosuchsession", None, 404, "no session"),
        ("GET", "/sessions/w1-nosuchsession", None, 404, "no session"),
        ("POST", "/sessions/w1-nosuchsession/interrupt", None, 404, "no session"),
        ("DELETE", "/sessions/w0-nosuchsession", None, 404, "no session"),
        ("GET", "/sessions/w7-beyond-the-workers", None, 404, "no session"),
        ("GET", "/sessions/plain", None, 404, "no session"),
    ],
)
async def test_bad_input_is_a_json_4xx_from_either_worker(
    serve: Serve, method: str, path: str, body: bytes | None, status: int, pattern: str
) -> None:
    async def ask(session: aiohttp.ClientSession) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        async with session.request(method, serve.url + path, data=body, headers=headers) as r:
            return int(r.headers[WORKER_HEADER]), (r.status, r.content_type, await r.json())

    for got, content_type, payload in (await from_each_worker(ask)).values():
        assert (got, content_type) == (status, "application/json"), payload
        assert payload["status"] == status and re.search(pattern, payload["error"]), payload


async def test_a_viewer_of_an_unknown_room_is_a_404_from_either_worker(serve: Serve) -> None:
    for room in ("w0-nobody", "w1-nobody", "nobody-here"):

        async def ask(session: aiohttp.ClientSession, room: str = room) -> tuple[int, Any]:
            viewer = LoopbackClient(serve.url, role="viewer", room=room, read_media=False)
            try:
                with pytest.raises(RuntimeError, match="404") as refused:
                    await viewer.connect(session)
            finally:
                await viewer.aclose()
            return int(viewer.answer_headers[WORKER_HEADER]), str(refused.value)

        for message in (await from_each_worker(ask)).values():
            assert f"no room '{room}'" in message


# ------------------------------------------------------------------ failures and shutdown


async def test_a_killed_worker_is_reported_and_the_other_serves_on(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = Serve(tmp_path / "serve.log", "--workers", "2")
    clients: list[LoopbackClient] = []
    try:
        clients += [await publish(server.url, http), await publish(server.url, http)]
        by_worker = {owner(c.session_id): c for c in clients}
        assert set(by_worker) == {0, 1}
        pids = server.workers()
        assert set(pids) == {0, 1}
        os.kill(pids[1], signal.SIGKILL)
        report = f"worker 1 (pid {pids[1]}) died (killed by SIGKILL)"
        await eventually(lambda: report in server.log(), f"the parent's report {report!r}")
        assert "1 of 2 workers still serve" in server.log()
        assert server.proc.poll() is None  # documented: the other worker keeps serving

        survivor = by_worker[0]
        await frames_arrive(survivor, 10)
        async with fresh() as session:
            for _ in range(5):  # whichever connection: only worker 0 listens now
                async with session.get(f"{server.url}/healthz") as resp:
                    assert resp.status == 200 and (await resp.json())["worker"] == 0
                sid = by_worker[1].session_id
                async with session.get(f"{server.url}/sessions/{sid}") as resp:
                    body = await resp.json()
                    assert resp.status == 503 and body["status"] == 503
                    assert "worker 1" in body["error"] and "not answering" in body["error"]
            async with session.get(f"{server.url}/metrics") as resp:  # the scrape says so
                scrape = await resp.text()
            assert 'msadtalker_worker_up{worker="0"} 1.0' in scrape
            assert 'msadtalker_worker_up{worker="1"} 0.0' in scrape
        # New publishers all go to the worker that is left.
        clients.append(await publish(server.url, http))
        assert owner(clients[-1].session_id) == 0
        await frames_arrive(clients[-1], 5)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
        code = server.stop()
    assert code == 1  # documented: a worker died during the run
    assert server.workers() == {}


async def test_the_workers_of_a_vanished_parent_drain_and_exit(tmp_path: Path) -> None:
    server = Serve(tmp_path / "serve.log", "--workers", "2")
    try:
        pids = server.workers()
        assert set(pids) == {0, 1}
        server.proc.kill()  # no SIGTERM to pass on: only the closed lifeline tells them
        server.proc.wait()
        await eventually(
            lambda: not any(alive(pid) for pid in pids.values()),
            f"the exit of the workers {pids}",
            timeout_s=30.0,
        )
    finally:
        server.stop()
    assert server.log().count("the supervising process is gone; draining") == 2


async def test_sigterm_drains_every_worker_and_exits_0(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    record = tmp_path / "rec"
    config = tmp_path / "serve.toml"
    # server.workers from the config file, no --workers flag.
    config.write_text(f'[server]\nworkers = 2\nrecord_dir = "{record}"\n')
    server = Serve(tmp_path / "serve.log", "--config", str(config))
    clients: list[LoopbackClient] = []
    try:
        clients += [await publish(server.url, http), await publish(server.url, http)]
        assert {owner(c.session_id) for c in clients} == {0, 1}
        await asyncio.gather(*(frames_arrive(c, 25) for c in clients))
        pids = server.workers()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 40)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
        server.stop()
    assert code == 0, server.log()
    assert server.log().count("draining") >= 2
    assert pids and not any(alive(pid) for pid in pids.values())
    traces = {p.stem: read_trace(p) for p in record.glob("*.csv")}
    assert set(traces) == {c.session_id for c in clients}
    for client in clients:
        trace = traces[client.session_id]
        assert list(trace["frame"]) == list(range(len(trace)))
        sent = max(f.pts // VIDEO_TICKS for f in client.video) + 1
        assert len(trace) >= sent
    assert not list(record.glob(".*tmp"))


# ------------------------------------------------------------------ who may publish

PUB = "workers-publisher-token-0123"
PUB2 = "workers-publisher-token-4567"
SECRET = "workers-room-token-secret-0123"


@pytest.fixture(scope="module")
def serve_with_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    env = {
        **os.environ,
        "MSADTALKER_PUBLISHER_TOKENS": f"{PUB},{PUB2}",
        "MSADTALKER_TOKEN_SECRET": SECRET,
    }
    log_path = tmp_path_factory.mktemp("serve-auth") / "serve.log"
    server = Serve(log_path, "--workers", "2", env=env)
    yield server
    assert server.stop() == 0, server.log()
    assert not any(secret in server.log() for secret in (PUB, PUB2, SECRET))


def internal_ports(server: Serve) -> list[int]:
    """The workers' internal ports, from a worker's command line."""
    pid = next(iter(server.workers().values()))
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return [int(p) for p in argv[argv.index(b"--worker-ports") + 1].split(b",")]


async def test_the_internal_ports_answer_only_the_workers(
    serve: Serve, http: aiohttp.ClientSession
) -> None:
    ports = internal_ports(serve)
    assert len(ports) == 2
    forged = '{"role":"publisher","subject":"open","room":null}'
    for port in ports:
        for headers in ({}, {HOP_HEADER: "a-guess", CREDENTIAL_HEADER: forged}):
            for method, path in (("GET", "/healthz"), ("DELETE", "/sessions/w0-x")):
                url = f"http://127.0.0.1:{port}{path}"
                async with http.request(method, url, headers=headers) as resp:
                    body = await resp.json()
                    assert resp.status == 403 and body["status"] == 403, body
                    assert "workers only" in body["error"]
    # The workers themselves still reach each other (placement asks every worker's load).
    async with http.get(f"{serve.url}/healthz") as resp:
        assert resp.status == 200


async def test_with_tokens_a_session_answers_its_creator_alone_from_either_worker(
    serve_with_tokens: Serve, http: aiohttp.ClientSession
) -> None:
    url = serve_with_tokens.url

    async def anonymous(session: aiohttp.ClientSession) -> tuple[int, Any]:
        offer = {"type": "offer", "sdp": "v=0"}
        async with session.post(f"{url}/offer", json=offer) as r:
            return int(r.headers[WORKER_HEADER]), (r.status, r.headers.get("WWW-Authenticate"))

    for status, challenge in (await from_each_worker(anonymous)).values():
        assert status == 401 and challenge is not None and challenge.startswith("Bearer")

    publisher = await publish(url, http, token=PUB)
    try:
        sid = publisher.session_id
        # The worker that receives the request authenticates it; the owner checks the
        # credential it was handed against the session's creator.
        for token, expected in ((PUB, 200), (PUB2, 404), (None, 401)):

            async def stats(session: aiohttp.ClientSession, token: str | None = token) -> Any:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.get(f"{url}/sessions/{sid}", headers=headers) as r:
                    return int(r.headers[WORKER_HEADER]), r.status

            assert set((await from_each_worker(stats)).values()) == {expected}, token
        await frames_arrive(publisher, 5)
    finally:
        await publisher.aclose()


async def test_a_room_token_publishes_in_its_room_on_the_rooms_worker(
    serve_with_tokens: Serve, http: aiohttp.ClientSession
) -> None:
    url = serve_with_tokens.url
    room = "stage-3"
    token = mint_room_token(SECRET, "publisher", room, 600, time.time())
    host = await publish(url, http, token=token)  # no room in the offer: the token's
    try:
        assert host.answer["room"] == room
        assert owner(host.session_id) == zlib.crc32(room.encode()) % 2
        # Another holder of a token for the room meets it whichever worker it reaches: the
        # token's room decides where an offer goes before it is placed.
        rival_token = mint_room_token(SECRET, "publisher", room, 600, time.time())

        async def rival(session: aiohttp.ClientSession) -> tuple[int, str]:
            client = LoopbackClient(url, speech(), token=rival_token, read_media=False)
            try:
                with pytest.raises(RuntimeError, match="409") as refused:
                    await client.connect(session)
            finally:
                await client.aclose()
            return int(client.answer_headers[WORKER_HEADER]), str(refused.value)

        await from_each_worker(rival)
        # The viewer link's token lets people watch this room, from either worker.
        link = host.answer["viewer_url"]
        assert link.startswith(f"/viewer?room={room}&token=") and token not in link
        viewer_token = link.split("&token=", 1)[1]

        async def watch(session: aiohttp.ClientSession) -> tuple[int, str]:
            viewer = LoopbackClient(
                url, role="viewer", room=room, token=viewer_token, read_media=False
            )
            try:
                await viewer.connect(session)
            finally:
                await viewer.aclose()
            return int(viewer.answer_headers[WORKER_HEADER]), viewer.session_id

        for viewer_id in (await from_each_worker(watch)).values():
            assert owner(viewer_id) == owner(host.session_id)
    finally:
        await host.aclose()
