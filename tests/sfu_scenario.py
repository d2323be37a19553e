"""The SFU fan-out scenario of tests/test_broadcast_sfu.py, run inside a network namespace of
its own (``unshare -rn python sfu_scenario.py WORKDIR WHIP_SERVER_DIR``): prints one JSON line
of what it saw.

Layout: one namespace; a veth pair ``veth-sfu`` (10.203.0.1) / ``veth-app`` (10.203.0.2) in it,
because Janus gathers no loopback candidates (its ``ice_enforce_list`` is ``veth-sfu``).
Janus (deploy/janus as shipped, its folder and interface rewritten) and simple-whip-server
(scripts/install-whip-server.sh) listen there; our server runs in this process on loopback.
A publisher speaks into a room; a ``whip`` output added over the room's API
(``POST /rooms/{room}/outputs``) publishes the room to simple-whip-server's endpoint; a Janus
viewer (HTTP API + aiortc) watches it. Nothing leaves the namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
from aiohttp.test_utils import TestServer
from janus_viewer import JanusViewer
from live_fakes import speech_like, stages_under_test

from streamer.config import Config, ServerConfig
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app

REPO = Path(__file__).resolve().parents[1]
SFU_ADDRESS = "10.203.0.1"
APP_ADDRESS = "10.203.0.2"
JANUS_HTTP = f"http://{SFU_ADDRESS}:8088/janus"
WHIP_PORT = 7080
ROOM = 1234  # the VideoRoom of deploy/janus/janus.plugin.videoroom.jcfg
ENDPOINT = "avatar"
TOKEN = "sfu-test-token-0123456789"
START_S = 15.0
FRAMES = 25  # a second of video through the SFU


def network() -> None:
    """The veth pair Janus gathers its candidates on."""
    commands = [
        "ip link set lo up",
        "ip link add veth-sfu type veth peer name veth-app",
        f"ip addr add {SFU_ADDRESS}/24 dev veth-sfu",
        f"ip addr add {APP_ADDRESS}/24 dev veth-app",
        "ip link set veth-sfu up",
        "ip link set veth-app up",
    ]
    for command in commands:
        subprocess.run(command.split(), check=True, timeout=10)


def janus_config(workdir: Path) -> Path:
    """deploy/janus as shipped, but for this namespace and folder."""
    folder = workdir / "janus"
    folder.mkdir()
    for source in (REPO / "deploy" / "janus").glob("*.jcfg"):
        text = source.read_text()
        if source.name == "janus.jcfg":
            for old, new in (
                ('configs_folder = "/etc/janus"', f'configs_folder = "{folder}"'),
                ('ice_enforce_list = "eth0"', 'ice_enforce_list = "veth-sfu"'),
            ):
                assert text.count(old) == 1, f"the shipped janus.jcfg lost {old!r}"
                text = text.replace(old, new)
        (folder / source.name).write_text(text)
    return folder


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def answers(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two pictures' grey levels at the first one's size."""
    grey_a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    grey_b = cv2.cvtColor(cv2.resize(b, grey_a.shape[::-1]), cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.corrcoef(grey_a.ravel(), grey_b.ravel())[0, 1])


def start_media_servers(workdir: Path, whip_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Janus, then simple-whip-server (which connects to Janus' WebSocket API, retrying)."""
    folder = janus_config(workdir)
    janus_argv = ["janus", "-C", str(folder / "janus.jcfg"), "-F", str(folder)]
    janus = subprocess.Popen(
        [*janus_argv, "-L", str(workdir / "janus.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**os.environ, "WHIP_PORT": str(WHIP_PORT), "WHIP_JANUS_WS": "ws://127.0.0.1:8188"}
    with open(workdir / "whip.log", "wb") as whip_log:
        whip = subprocess.Popen(
            ["node", "src/server.js"], cwd=whip_dir, env=env, stdout=whip_log, stderr=whip_log
        )
    return [whip, janus]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def scenario() -> dict[str, Any]:
    result: dict[str, Any] = {}
    whip_base = f"http://{SFU_ADDRESS}:{WHIP_PORT}/whip"
    config = Config(server=ServerConfig(jitter_ms=20))
    server = TestServer(make_app(config, stages_under_test(config)), host="127.0.0.1")
    publisher: LoopbackClient | None = None
    viewer = JanusViewer(JANUS_HTTP, ROOM)
    async with aiohttp.ClientSession() as http:
        try:
            await until(lambda: answers(http, f"{JANUS_HTTP}/info"), "janus", START_S)
            await until(lambda: answers(http, f"{whip_base}/healthcheck"), "whip server", START_S)
            endpoint = {"id": ENDPOINT, "room": ROOM, "token": TOKEN}
            async with http.post(f"{whip_base}/create", json=endpoint) as resp:
                assert resp.status == 200, await resp.text()

            await server.start_server()
            url = f"http://127.0.0.1:{server.port}"
            speech = speech_like([(0.5, 2.5), (3.0, 5.0)], 6.0)
            publisher = LoopbackClient(url, speech, read_media=False, mic_loop=True)
            await publisher.connect(http)
            room = publisher.answer["room"]
            poster = await avatar_at_rest(http, url)
            outputs = f"{url}/rooms/{room}/outputs"
            target = {"kind": "whip", "url": f"{whip_base}/endpoint/{ENDPOINT}"}

            # A refused publish (a wrong token) is an error state that gives up, not a crash.
            refused = await add_output(http, outputs, {**target, "token": "nope"})
            await until(lambda: output_state(http, refused, "(gave up)"), "the refusal", 10)
            async with http.get(refused) as resp:
                result["refused"] = await resp.json()

            output = await add_output(http, outputs, {**target, "token": TOKEN})
            await until(lambda: output_state(http, output, "live"), "the WHIP publish", 15)
            feeds: list[int] = []

            async def publisher_listed() -> bool:
                feeds[:] = await viewer.publishers(http)
                return bool(feeds)

            await until(publisher_listed, "the publisher in the VideoRoom", 10)
            await viewer.watch(http, feeds[0])
            await until(_async(lambda: viewer.received >= FRAMES), f"{FRAMES} frames", 20)
            result["received"] = viewer.received
            result["size"] = list(viewer.frames[-1].shape)
            result["similarity"] = similarity(poster, viewer.frames[-1])
            async with http.delete(output) as resp:
                assert resp.status == 200, await resp.text()
                result["output"] = await resp.json()
            async with http.get(f"{whip_base}/endpoints") as resp:
                result["endpoints"] = await resp.json(content_type=None)
        finally:
            await viewer.aclose(http)
            if publisher is not None:
                await publisher.aclose()
            await server.close()
    return result


async def add_output(http: aiohttp.ClientSession, outputs: str, body: dict[str, str]) -> str:
    """``POST /rooms/{room}/outputs``: the new output's URL."""
    async with http.post(outputs, json=body) as resp:
        assert resp.status == 201, await resp.text()
        return f"{outputs}/{(await resp.json())['id']}"


async def output_state(http: aiohttp.ClientSession, output: str, ending: str) -> bool:
    async with http.get(output) as resp:
        return str((await resp.json())["state"]).endswith(ending)


async def avatar_at_rest(http: aiohttp.ClientSession, url: str) -> np.ndarray:
    async with http.get(f"{url}/avatar.jpg") as resp:
        jpeg = np.frombuffer(await resp.read(), np.uint8)
    image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert image is not None, "the poster is no JPEG"
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("whip_dir", type=Path, help="simple-whip-server's install folder")
    args = parser.parse_args()
    network()
    servers = start_media_servers(args.workdir, args.whip_dir)
    try:
        result = asyncio.run(scenario())
    finally:
        stop(servers)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
