"""``msadtalker bench sessions``: how many concurrent 25 fps publisher sessions (pipeline +
VP8 video + Opus audio encoding) one server holds with < 1 % dropped frames; ``--workers N``:
a server of N worker processes (``msadtalker serve --workers N``).

A ``msadtalker serve`` child process; for N = 1, 2, 3, ... (``--counts``), N aiortc publishers
send speech at once for ``--seconds``; the server's own figures give, per session, the frames
made and the frames dropped (renders skipped because the session fell behind real time + the
frames its worst-served track lost from a full queue, i.e. an encoder that could not keep up).
A step passes when every session dropped < 1 %. The clients run in this process and decode
the video they get, so they share the machine with the server: the figure is conservative.
Each step also records the server's CPU (all its processes, and per process), the machine's
load average before and after, and how the sessions spread over the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from streamer.bench.live import (
    ServerProcess,
    cpu_seconds,
    machine_cpu_ticks,
    process_tree,
    session_stats,
)
from streamer.bench.signals import onset_speech
from streamer.io.webrtc_client import LoopbackClient

log = logging.getLogger(__name__)

LIVE = True  # --lookahead-ms is the live sessions' (server.lookahead_ms)
DESCRIPTION = "live: concurrent 25 fps publisher sessions held with < 1 percent dropped frames"
DROP_LIMIT = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--counts",
        default="1,2,3,4,5,6,8",
        help="session counts to try, in order (stops after the first failure)",
    )
    parser.add_argument("--seconds", type=float, default=12.0, help="run time of each step")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="server worker processes (default 1)"
    )
    parser.add_argument("--avatar", type=Path, metavar="IMG")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.bench.latency import _serve_flags

    counts = [int(c) for c in str(args.counts).split(",") if c.strip()]
    workers = int(getattr(args, "workers", 1) or 1)
    flags = _serve_flags(args) + (["--workers", str(workers)] if workers > 1 else [])
    result = asyncio.run(bench_sessions(counts, args.seconds, flags))
    return {"workers": workers, **result}


async def bench_sessions(
    counts: list[int], seconds: float, serve_argv: list[str] | None = None, url: str | None = None
) -> dict[str, Any]:
    if url is not None:
        return await _steps(url, None, counts, seconds)
    async with ServerProcess(list(serve_argv or [])) as server:
        return await _steps(server.url, server.pid, counts, seconds)


async def _steps(url: str, pid: int | None, counts: list[int], seconds: float) -> dict[str, Any]:
    steps = []
    held = 0
    for count in counts:
        step = await _step(url, pid, count, seconds)
        steps.append(step)
        log.info("%d sessions: worst drop %.2f %%", count, 100 * step["worst_drop_rate"])
        if step["worst_drop_rate"] >= DROP_LIMIT or step["failed"]:
            break
        held = count
    return {
        "held_sessions": held,
        "drop_limit": DROP_LIMIT,
        "cpu_count": os.cpu_count(),
        "seconds_per_step": seconds,
        "steps": steps,
    }


def _user_session(url: str, k: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession | None:
    """The HTTP client of publisher ``k``: from a loopback address of its own when the server
    is on loopback (all of 127.0.0.0/8 is), so that N publishers are N users to the server's
    per-client limits (offers a minute, offers still connecting); else ``None`` (shared)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if not host.startswith("127."):
        return None
    source = f"127.0.{2 + k // 250}.{1 + k % 250}"
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    return aiohttp.ClientSession(timeout=timeout, connector=connector)


async def _step(url: str, pid: int | None, count: int, seconds: float) -> dict[str, Any]:
    speech = onset_speech(bursts=max(2, int(seconds / 2)), lead_s=0.5, seed=count)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        clients = [
            LoopbackClient(url, speech.samples, keep_audio=False, decode_video=False, mic_opus=True)
            for _ in range(count)
        ]
        offers = [_user_session(url, k, timeout) for k in range(count)]
        try:
            connecting = (c.connect(o or http) for c, o in zip(clients, offers, strict=True))
            results = await asyncio.gather(*connecting, return_exceptions=True)
        finally:
            await asyncio.gather(*(o.close() for o in offers if o is not None))
        failed = sum(isinstance(r, BaseException) for r in results)
        load_before = os.getloadavg()
        procs = process_tree(pid) if pid else []
        cpu0, wall0 = [cpu_seconds(p) for p in procs], time.monotonic()
        client0, machine0 = time.process_time(), machine_cpu_ticks()
        await asyncio.sleep(seconds)
        machine1 = machine_cpu_ticks()
        cpu1, wall1 = [cpu_seconds(p) for p in procs], time.monotonic()
        client_cpu = 100 * (time.process_time() - client0) / (wall1 - wall0)
        load_after = os.getloadavg()
        stats = [await session_stats(http, url, c.session_id) for c in clients if c.answer]
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        await asyncio.sleep(1.0)  # let the server clean up before the next step
    sessions = []
    for s in stats:
        session = s.get("session", {})
        frames = int(session.get("frames_out", 0))
        dropped = int(session.get("dropped_frames", 0))
        sessions.append(
            {
                "session_id": s.get("session_id"),
                "frames": frames,
                "dropped": dropped,
                "renders_skipped": session.get("renders_skipped"),
                "drop_rate": dropped / frames if frames else 1.0,
                "step_ms_p95": session.get("step_ms_p95"),
                "late_ticks": session.get("late_ticks"),
            }
        )
    received = [len(c.video) for c in clients]
    per_process = [
        round(100 * (b - a) / (wall1 - wall0), 1) for a, b in zip(cpu0, cpu1, strict=True)
    ]
    spread: dict[str, int] = {}
    for s in sessions:
        worker = str(s["session_id"]).split("-", 1)[0] if "-" in str(s["session_id"]) else "-"
        spread[worker] = spread.get(worker, 0) + 1
    busy = 100 * (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
    server_cpu = sum(per_process)
    return {
        "sessions": count,
        "failed": failed,
        "worst_drop_rate": max((s["drop_rate"] for s in sessions), default=1.0),
        "server_cpu_percent": round(server_cpu, 1) if pid else None,
        # Parent first, then the workers (a parent that only supervises costs ~0).
        "server_cpu_percent_per_process": per_process,
        "client_cpu_percent": round(client_cpu, 1),  # this process: the N aiortc clients
        # Everything on the machine (server, clients, kernel, anyone else), % of all cores.
        "machine_busy_percent": round(busy, 1),
        # What neither the server nor the clients used, % of one core: other work on the
        # machine (a figure taken while this is large is not the server's alone).
        "others_cpu_percent": round(busy * (os.cpu_count() or 1) - server_cpu - client_cpu, 1)
        if pid
        else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "sessions_per_worker": spread,
        "frames_received_min": min(received, default=0),
        "per_session": sessions,
    }
