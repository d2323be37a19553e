"""``msadtalker bench sessions``: how many concurrent 25 fps publisher sessions (pipeline +
VP8 video + Opus audio encoding) one server process holds with < 1 % dropped frames.

A ``msadtalker serve`` child process; for N = 1, 2, 3, ... (``--counts``), N aiortc publishers
send speech at once for ``--seconds``; the server's own figures give, per session, the frames
made and the frames dropped (renders skipped because the session fell behind real time + the
frames its worst-served track lost from a full queue, i.e. an encoder that could not keep up).
A step passes when every session dropped < 1 %. The clients run in this process and decode
the video they get, so they share the machine with the server: the figure is conservative.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from streamer.bench.live import ServerProcess, cpu_seconds, session_stats
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
    parser.add_argument("--avatar", type=Path, metavar="IMG")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.bench.latency import _serve_flags

    counts = [int(c) for c in str(args.counts).split(",") if c.strip()]
    return asyncio.run(bench_sessions(counts, args.seconds, _serve_flags(args)))


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


async def _step(url: str, pid: int | None, count: int, seconds: float) -> dict[str, Any]:
    speech = onset_speech(bursts=max(2, int(seconds / 2)), lead_s=0.5, seed=count)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        clients = [
            LoopbackClient(url, speech.samples, keep_audio=False, decode_video=False, mic_opus=True)
            for _ in range(count)
        ]
        results = await asyncio.gather(*(c.connect(http) for c in clients), return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in results)
        cpu0, wall0 = cpu_seconds(pid) if pid else 0.0, time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, wall1 = cpu_seconds(pid) if pid else 0.0, time.monotonic()
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
                "frames": frames,
                "dropped": dropped,
                "renders_skipped": session.get("renders_skipped"),
                "drop_rate": dropped / frames if frames else 1.0,
                "step_ms_p95": session.get("step_ms_p95"),
                "late_ticks": session.get("late_ticks"),
            }
        )
    received = [len(c.video) for c in clients]
    return {
        "sessions": count,
        "failed": failed,
        "worst_drop_rate": max((s["drop_rate"] for s in sessions), default=1.0),
        "server_cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1) if pid else None,
        "frames_received_min": min(received, default=0),
        "per_session": sessions,
    }
