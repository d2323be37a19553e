"""``msadtalker bench fuzz``: Hypothesis against a real ``msadtalker serve`` (loopback only).

A ``serve`` child process (``--workers N``) with publisher and viewer tokens and a room-token
secret made for the run; a publisher streams all along (a token of its own, unknown to the
fuzzer). Three targets, ``--cases`` each (``streamer.bench.fuzz_run``): the offer parser in
this process, ``POST /offer`` (the parser, then aiortc's negotiation; answered offers are hung
up at once) and every route. Figures per target: statuses, 5xx, error bodies that are not the
JSON ``{"error", "status"}``, secrets echoed, latency p50 / p99 / max and the slowest case.
Then: ERROR lines and tracebacks in the server's log, whether it is alive, whether the
streaming session lost a frame, and whether a new session streams (25 frames). Needs the
``dev`` extra (Hypothesis).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import secrets
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from msadtalker.errors import InputError
from streamer.bench.live import ServerProcess
from streamer.bench.signals import onset_speech
from streamer.io.webrtc_client import LoopbackClient

LIVE = True
DESCRIPTION = "fuzz every HTTP route, the SDP parser and the negotiation path (no 5xx)"
LIVE_ROOM = "live"
VIDEO_TICKS = 3600
_LOUD = re.compile(r" (ERROR|CRITICAL) ")


class HypothesisMissing(InputError):
    """``bench fuzz`` without the ``dev`` extra."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", type=int, default=2000, help="cases per target (2000)")
    parser.add_argument("--fuzz-seed", type=int, default=0, help="Hypothesis seed (0)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="serve --workers N")
    parser.add_argument("--avatar", type=Path, metavar="IMG")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR")


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise HypothesisMissing("bench fuzz: needs Hypothesis (pip install -e '.[dev]')") from None
    from streamer.bench.latency import _serve_flags

    for name in ("avatar", "checkpoints", "config"):  # serve runs in a scratch directory
        if getattr(args, name, None) is not None:
            setattr(args, name, Path(getattr(args, name)).resolve())
    workers = int(args.workers or 1)
    flags = _serve_flags(args) + (["--workers", str(workers)] if workers > 1 else [])
    result = asyncio.run(bench_fuzz(int(args.cases), int(args.fuzz_seed), flags))
    return {"workers": workers, **result}


async def bench_fuzz(cases: int, seed: int, serve_argv: list[str]) -> dict[str, Any]:
    from streamer.bench.fuzz_run import Sender, fuzz_offers, fuzz_parser, fuzz_routes_of
    from streamer.bench.fuzz_strategies import Credentials
    from streamer.server.auth import mint_room_token

    publisher, streamer, viewer = (secrets.token_urlsafe(18) for _ in range(3))
    secret = secrets.token_urlsafe(24)
    now = time.time()
    credentials = Credentials(
        publisher=publisher,
        viewer=viewer,
        room_publisher=mint_room_token(secret, "publisher", "fuzz-room", 3600, now),
        room_viewer=mint_room_token(secret, "viewer", LIVE_ROOM, 3600, now),
        expired=mint_room_token(secret, "publisher", "fuzz-room", 1, now - 10),
    )
    env = {
        **os.environ,
        "MSADTALKER_PUBLISHER_TOKENS": f"{publisher},{streamer}",
        "MSADTALKER_VIEWER_TOKENS": viewer,
        "MSADTALKER_TOKEN_SECRET": secret,
    }
    started = time.monotonic()
    load_before = os.getloadavg()
    # The server runs in a scratch directory: recordings the fuzz starts land there.
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as scratch:
        async with ServerProcess(serve_argv, env=env, stderr=log, cwd=scratch) as server:
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                speech = onset_speech(bursts=20, lead_s=0.5, seed=seed).samples
                streaming = LoopbackClient(
                    server.url,
                    speech,
                    room=LIVE_ROOM,
                    token=streamer,
                    keep_audio=False,
                    decode_video=False,
                    mic_loop=True,
                )
                await streaming.connect(http)
                try:
                    sender = Sender(server.url, credentials.secrets())
                    ids = [streaming.session_id, "w0-" + streaming.session_id, "w1-nobody"]
                    rooms = [LIVE_ROOM, "fuzz-room"]
                    # In a process of their own: drawing cases is CPU-bound Python, and would
                    # starve the streaming client's event loop of the GIL in this one.
                    loop = asyncio.get_running_loop()
                    spawn = multiprocessing.get_context("spawn")
                    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                        figures = {
                            "parser": await loop.run_in_executor(pool, fuzz_parser, cases, seed),
                            "offers": await loop.run_in_executor(
                                pool, fuzz_offers, sender, f"Bearer {publisher}", rooms, cases, seed
                            ),
                            "routes": await loop.run_in_executor(
                                pool, fuzz_routes_of, sender, credentials, ids, rooms, cases, seed
                            ),
                        }
                    alive = await _alive(http, server.url)
                    after = await _new_session(http, server.url, publisher, speech)
                    got = [f.pts // VIDEO_TICKS for f in streaming.video]
                    served = await _session_figures(http, server.url, streaming, streamer)
                finally:
                    await streaming.aclose()
        log.seek(0)
        lines = log.read().decode("utf-8", "replace").splitlines()
    return {
        "cases_per_target": cases,
        "seed": seed,
        "targets": {name: f.as_dict() for name, f in figures.items()},
        "server_error_lines": sum(bool(_LOUD.search(line)) for line in lines),
        "server_tracebacks": sum(line.startswith("Traceback") for line in lines),
        "server_alive_after": alive,
        "new_session_after": after,
        "streaming_session": {
            **served,
            "frames_received": len(got),
            "missing_indices": (got[-1] - got[0] + 1 - len(got)) if got else None,
        },
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


async def _session_figures(
    http: aiohttp.ClientSession, url: str, client: LoopbackClient, token: str
) -> dict[str, Any]:
    """The server's side of the session that streamed all along."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{url}/sessions/{client.session_id}", headers=headers) as resp:
        if resp.status != 200:
            return {"status": resp.status}
        body = await resp.json()
    session = body["session"]
    keys = ("frames_out", "dropped_frames", "late_ticks", "max_lag_ms", "fps", "ended")
    return {
        **{key: session.get(key) for key in keys},
        "queue_drops": sum(track["dropped"] for track in body["tracks"]),
    }


async def _alive(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(f"{url}/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _new_session(
    http: aiohttp.ClientSession, url: str, token: str, speech: Any
) -> dict[str, Any]:
    """A new publisher after the fuzz: does it stream? (25 frames within 20 s)"""
    client = LoopbackClient(url, speech, token=token, keep_audio=False, decode_video=False)
    try:
        await client.connect(http)
        deadline = time.monotonic() + 20.0
        while len(client.video) < 25 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polled: this client keeps no event per frame
        return {"connected": True, "frames": len(client.video)}
    except (RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
        return {"connected": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        await client.aclose()
