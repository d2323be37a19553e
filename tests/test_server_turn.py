"""Through a TURN relay: Debian's coturn in a network namespace the test makes (``unshare
-rn``, a veth pair on 10.203.N.0/24, nothing else reachable from it), the server configured
with its TURN REST secret (``[ice] turn_secret``, coturn's ``use-auth-secret``). A WHEP viewer
whose ICE policy is relay-only, with the ICE servers the server hands out in its ``OPTIONS``
``Link`` headers, still receives the avatar: the credentials the server minted are the ones
coturn accepts, and every candidate of that viewer is a relay on coturn.

Needs coturn (``scripts/install-media-servers.sh``), ``unshare`` and ``ip``, and root for the
host end of the veth pair; skipped with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from live_fakes import speech_like, stages_under_test
from wish_client import WishClient

from streamer.config import Config, IceConfig, ServerConfig
from streamer.server.app import make_app
from streamer.server.ice import IceServer

SECRET = "coturn-test-secret-0123456789"
TURN_PORT = 3478
READY_TRIES = 100  # STUN binding requests, 0.1 s each, until coturn answers
# The host end of the pair and the namespace's; 10.203.N.0/24 per test process.
SUBNET = 10 + os.getpid() % 240
HOST_IF, NS_IF = f"vth{os.getpid()}"[:15], f"vtn{os.getpid()}"[:15]
TURN_IP, HOST_IP = f"10.203.{SUBNET}.1", f"10.203.{SUBNET}.2"
_LINK = re.compile(
    r'<(?P<url>[^>]+)>; rel="ice-server"(?:; username="(?P<user>[^"]*)"; '
    r'credential="(?P<credential>[^"]*)"; credential-type="password")?'
)


def _missing() -> str | None:
    if shutil.which("turnserver") is None:
        return "coturn is not installed (scripts/install-media-servers.sh installs it)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    if os.geteuid() != 0:
        return "needs root for the host end of the veth pair to coturn's namespace"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _coturn_script(workdir: Path) -> str:
    """Inside the namespace: say so (a line on stdout), wait for the veth end (a line on
    stdin), address it, run coturn on it alone (no TLS, no CLI, its state and log in
    ``workdir``)."""
    return (
        "echo inside && read _ && ip link set lo up && "
        f"ip addr add {TURN_IP}/24 dev {NS_IF} && ip link set {NS_IF} up && "
        f"exec turnserver -n --listening-ip={TURN_IP} --relay-ip={TURN_IP} "
        f"--listening-port={TURN_PORT} --min-port=49152 --max-port=49300 "
        f"--use-auth-secret --static-auth-secret={SECRET} --realm=msadtalker.test "
        f"--no-tls --no-dtls --no-cli --log-file=stdout --simple-log "
        f"--pidfile={workdir}/turnserver.pid --userdb={workdir}/turndb "
        f"> {workdir}/coturn.log 2>&1"
    )


def _stun_answers(address: str) -> bool:
    """Whether a STUN server answers a binding request on ``address`` (bounded tries)."""
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        for _ in range(READY_TRIES):
            sock.sendto(request, (address, TURN_PORT))
            try:
                data, _ = sock.recvfrom(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            return data[:2] == b"\x01\x01"  # Binding success response
    return False


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[str]:
    """coturn in its own namespace; the TURN URL (see the module docstring)."""
    proc = subprocess.Popen(
        ["unshare", "-rn", "sh", "-c", _coturn_script(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # Its namespace exists once it speaks: only then can the veth end be moved into it.
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        assert ready and proc.stdout.readline() == b"inside\n", "unshare -rn did not start"
        ip = ["ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF]
        subprocess.run([*ip, "netns", str(proc.pid)], check=True)
        subprocess.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF], check=True)
        subprocess.run(["ip", "link", "set", HOST_IF, "up"], check=True)
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        if not _stun_answers(TURN_IP):
            raise AssertionError(f"coturn did not answer: {(tmp_path / 'coturn.log').read_text()}")
        yield f"turn:{TURN_IP}:{TURN_PORT}?transport=udp"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if not proc.stdin.closed:
            proc.stdin.close()
        # Gone with the namespace; deleted here too should anything have kept it.
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True, check=False)


@pytest.fixture
async def live(coturn: str) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    ice = IceConfig(turn_urls=(coturn,), turn_secret=SECRET)
    server = ServerConfig(jitter_ms=20, connect_timeout_s=10.0, peer_timeout_s=3.0)
    config = Config(server=server, ice=ice)
    stages = stages_under_test(dataclasses.replace(config, ice=IceConfig()))
    test_server = TestServer(make_app(config, stages), host="127.0.0.1")
    await test_server.start_server()
    async with aiohttp.ClientSession() as http:
        yield str(test_server.make_url("")).rstrip("/"), http
    await test_server.close()


def _ice_from_links(links: list[str]) -> tuple[IceServer, ...]:
    servers = []
    for link in links:
        match = _LINK.fullmatch(link)
        assert match is not None, link
        user, credential = match["user"] or "", match["credential"] or ""
        servers.append(IceServer((match["url"],), user, credential))
    return tuple(servers)


async def test_a_relay_only_viewer_gets_the_avatar_through_coturn(
    live: tuple[str, aiohttp.ClientSession], coturn: str
) -> None:
    url, http = live
    publisher = WishClient("publisher", audio=speech_like([(0.2, 1.0)], 2.0))
    answer = await publisher.connect(http, f"{url}/whip/show")
    assert any(coturn in link for link in answer.headers.getall("Link"))
    async with http.options(f"{url}/whep/show") as resp:
        servers = _ice_from_links(resp.headers.getall("Link"))
    assert [s.urls for s in servers] == [(coturn,)]
    viewer = WishClient("viewer", ice=servers, relay_only=True)
    try:
        await viewer.connect(http, f"{url}/whep/show")
        await viewer.wait_frames(50)
        # Relay-only: every candidate this viewer offered and could use is on coturn.
        for transceiver in viewer.pc.getTransceivers():
            gatherer = transceiver.receiver.transport.transport.iceGatherer
            candidates = gatherer.getLocalCandidates()
            assert candidates and {(c.type, c.ip) for c in candidates} == {("relay", TURN_IP)}
        assert viewer.audio_frames > 0
    finally:
        await viewer.aclose()
        await publisher.aclose()
