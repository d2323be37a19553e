"""Several ``serve`` instances behind the shipped nginx configuration (issue 12, item 6).

Debian ``nginx`` (scripts/install-media-servers.sh), started here on a port of its own with
deploy/nginx/msadtalker-lb.conf as shipped, only its listen address and upstream addresses
rewritten to two ``msadtalker serve --instance-id`` child processes on loopback. New offers
spread over both, follow-ups (stats, viewers, interrupt, hang-up) reach the instance the id
names, and a killed instance's ids get nginx's JSON 502 while the other serves on.
"""

from __future__ import annotations

import asyncio
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_fakes import eventually, speech_like

from streamer.io.webrtc_client import LoopbackClient
from streamer.server.ids import parse_id

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "deploy" / "nginx" / "msadtalker-lb.conf"
INSTANCES = {"node-a": "10.0.0.11:8080", "node-b": "10.0.0.12:8080"}  # as shipped
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
START_S = 120.0  # a serve child prepares its avatar before it prints its address
OFFERS = 6  # at most, until both instances have a session (round robin: 2 suffice)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NGINX is None, reason="nginx not installed (scripts/install-media-servers.sh)"
    ),
]


class Serve:
    """``msadtalker serve --instance-id ID`` in a child process, logging to a file."""

    def __init__(self, instance: str, log_path: Path) -> None:
        self.instance = instance
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        argv = ["-m", "streamer.cli", "serve", "--port", "0", "--instance-id", instance]
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=self._log, cwd=REPO
        )
        self.address = ""

    def wait_address(self) -> str:
        """``127.0.0.1:PORT`` once the child announces it."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_S)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.search(r"http://(127\.0\.0\.1:\d+)/", line)
        if match is None:
            self.stop()
            raise AssertionError(f"serve {self.instance} did not start: {line!r}\n{self.log()}")
        self.address = match.group(1)
        return self.address

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def balancer_config(shipped: str, listen: int, addresses: dict[str, str]) -> str:
    """The shipped http-context file with our addresses, inside a minimal main config that
    keeps every file nginx writes in its prefix directory."""
    site = shipped.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    for instance, address in addresses.items():
        shipped_address = INSTANCES[instance]
        assert site.count(shipped_address) == 3, f"the shipped config lost {shipped_address}"
        site = site.replace(shipped_address, address)
    return f"""
daemon off;
master_process off;
pid nginx.pid;
error_log error.log info;
events {{ worker_connections 256; }}
http {{
    access_log access.log;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
{site}
}}
"""


@dataclass
class Stack:
    url: str  # the balancer
    instances: dict[str, Serve]


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    async def connects() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    deadline = time.monotonic() + timeout_s
    while not await connects():
        assert proc.poll() is None, "nginx exited"
        assert time.monotonic() < deadline, f"nginx not listening on {port} in {timeout_s} s"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert NGINX is not None
    where = tmp_path_factory.mktemp("lb")
    instances = {name: Serve(name, where / f"{name}.log") for name in INSTANCES}
    nginx: subprocess.Popen[bytes] | None = None
    try:
        addresses = {name: serve.wait_address() for name, serve in instances.items()}
        port = free_port()
        conf = where / "nginx.conf"
        conf.write_text(balancer_config(SHIPPED.read_text(), port, addresses))
        checked = subprocess.run(
            [NGINX, "-t", "-p", str(where), "-c", str(conf), "-e", str(where / "error.log")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr
        nginx = subprocess.Popen(
            [NGINX, "-p", str(where), "-c", str(conf), "-e", str(where / "error.log")],
            stderr=subprocess.DEVNULL,
        )
        asyncio.run(wait_listening(port, nginx, 10.0))
        yield Stack(f"http://127.0.0.1:{port}", instances)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for serve in instances.values():
            serve.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def publish(url: str, http: aiohttp.ClientSession) -> LoopbackClient:
    speech = speech_like([(0.5, 2.5)], 3.0)
    client = LoopbackClient(url, speech, keep_audio=False, decode_video=False, mic_loop=True)
    await client.connect(http)
    return client


def instance_of(some_id: str) -> str:
    instance = parse_id(some_id).instance
    assert instance is not None, some_id
    return instance


async def one_on_each(url: str, http: aiohttp.ClientSession) -> dict[str, LoopbackClient]:
    """Publishers through the balancer until both instances hold one (closing the extras)."""
    placed: dict[str, LoopbackClient] = {}
    for _ in range(OFFERS):
        client = await publish(url, http)
        instance = instance_of(client.session_id)
        assert instance_of(client.answer["room"]) == instance
        if instance in placed:
            await client.aclose()
        else:
            placed[instance] = client
        if len(placed) == len(INSTANCES):
            return placed
    for client in placed.values():
        await client.aclose()
    raise AssertionError(f"{OFFERS} offers all went to {sorted(placed)}")


async def frames_arrive(client: LoopbackClient, count: int = 10) -> None:
    target = len(client.video) + count
    await eventually(lambda: len(client.video) >= target, f"{target} video frames", 20.0)


async def status_and_json(response: aiohttp.ClientResponse) -> tuple[int, str, Any]:
    return response.status, response.content_type, await response.json()


async def test_offers_spread_and_follow_ups_reach_the_owner(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    clients = await one_on_each(stack.url, http)
    viewers: list[LoopbackClient] = []
    try:
        for instance, client in clients.items():
            sid = client.session_id
            async with http.get(f"{stack.url}/sessions/{sid}") as resp:
                status, _, stats = await status_and_json(resp)
                assert status == 200, stats  # only the owner knows the session
            # A viewer's offer names the room in its URL: the balancer sends it to the owner.
            viewer = LoopbackClient(
                stack.url, role="viewer", room=client.answer["room"], decode_video=False
            )
            viewers.append(viewer)
            await viewer.connect(http)
            assert instance_of(viewer.session_id) == instance
            await frames_arrive(viewer)
            async with http.post(f"{stack.url}/sessions/{sid}/interrupt") as resp:
                assert resp.status == 200, await resp.text()
            async with http.delete(f"{stack.url}/sessions/{sid}") as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{stack.url}/sessions/{sid}") as resp:
                status, _, body = await status_and_json(resp)
                assert status in (404, 410), body  # ended on its owner, not unknown elsewhere
    finally:
        for peer in [*viewers, *clients.values()]:
            await peer.aclose()


async def test_viewers_of_a_room_a_client_named_meet_its_publisher(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    """A chosen name carries no instance: the balancer hashes it, publisher and viewers alike."""
    peers: list[LoopbackClient] = []
    try:
        for room in ("party-room", "studio-7", "anchor"):
            speech = speech_like([(0.5, 2.5)], 3.0)
            publisher = LoopbackClient(
                stack.url, speech, room=room, keep_audio=False, decode_video=False, mic_loop=True
            )
            peers.append(publisher)
            await publisher.connect(http)
            assert publisher.answer["room"] == room
            viewer = LoopbackClient(stack.url, role="viewer", room=room, decode_video=False)
            peers.append(viewer)
            await viewer.connect(http)
            assert instance_of(viewer.session_id) == instance_of(publisher.session_id)
        await frames_arrive(peers[-1])
    finally:
        for peer in peers:
            await peer.aclose()


async def test_a_killed_instance_is_a_json_502_and_the_other_serves_on(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    clients = await one_on_each(stack.url, http)
    fresh: LoopbackClient | None = None
    try:
        dead = stack.instances["node-b"]
        dead.proc.kill()
        dead.proc.wait(10)
        sid = clients["node-b"].session_id
        for method, path in (("GET", f"/sessions/{sid}"), ("DELETE", f"/sessions/{sid}")):
            async with http.request(method, stack.url + path) as resp:
                status, content_type, body = await status_and_json(resp)
                assert resp.headers.get("Retry-After") == "5"
            assert (status, content_type) == (502, "application/json"), body
            assert body["status"] == 502
            assert "instance node-b" in body["error"] and "not answering" in body["error"]

        survivor = clients["node-a"]
        await frames_arrive(survivor)
        fresh = await publish(stack.url, http)  # nginx passes the dead one over
        assert instance_of(fresh.session_id) == "node-a"
        await frames_arrive(fresh)
        async with http.get(f"{stack.url}/sessions/{survivor.session_id}") as resp:
            assert resp.status == 200
    finally:
        for peer in [*clients.values(), *([fresh] if fresh is not None else [])]:
            await peer.aclose()
