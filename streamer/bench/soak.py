"""``msadtalker bench soak``: publishers and viewers for minutes on ``serve --workers N``:
where every frame went, and whether memory grows.

A ``serve`` child process; ``--publishers`` aiortc publishers whose mics loop voiced speech
(Opus, as a browser sends it) and ``--viewers`` viewers spread over their rooms, each client
from a loopback address of its own. The viewers do not decode to RGB (they count the frames
aiortc hands over: its VP8 decoder still runs), to spare the CPU the server shares.

After ``--warmup-s`` the figures are read (A), again ``--minutes`` later (B), and the window
B - A is accounted for:

* per subscription (each track of each peer, from ``GET /sessions/ID``, read in one step with
  its session's frame count): items offered (a video track: the frames the session published
  in the window; a voice track: the mic blocks handed on) left the queue sent, were dropped
  by the drop policy (queue full) or are still queued:
  ``residual`` = offered - sent - dropped - queue growth, 0 when nothing else was lost;
* per video subscription, the client's side: frames received vs frames the server sent
  (``lost_in_transport``; the frames in flight at A and B differ by a few);
* in total, from ``/metrics`` (all workers): published, rendered, dropped by reason, sent by
  kind, and the same balance (frames published x subscriptions = sent + dropped + queued);
* RSS of every worker (``process_resident_memory_bytes``) at A and B: growth in percent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streamer.bench.live import ServerProcess, process_tree
from streamer.bench.signals import onset_speech
from streamer.io.webrtc_client import LoopbackClient

LIVE = True
DESCRIPTION = "live: publishers + viewers for minutes: where every frame went, RSS growth"
PREFIX = "msadtalker_"
READ_TRIES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--viewers", type=int, default=8, help="spread over the publishers")
    parser.add_argument("--minutes", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="before the window")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="serve --workers N")
    parser.add_argument("--avatar", type=Path, metavar="IMG")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.bench.latency import _serve_flags

    workers = int(args.workers or 1)
    flags = _serve_flags(args) + (["--workers", str(workers)] if workers > 1 else [])
    result = asyncio.run(
        bench_soak(args.publishers, args.viewers, 60.0 * args.minutes, args.warmup_s, flags)
    )
    return {"workers": workers, **result}


async def bench_soak(
    publishers: int, viewers: int, seconds: float, warmup_s: float, serve_argv: list[str]
) -> dict[str, Any]:
    async with ServerProcess(serve_argv) as server:
        clients, https = await _connect(server.url, publishers, viewers)
        try:
            http = https[0]
            await asyncio.sleep(warmup_s)  # the measured window starts after the warm-up
            a = await _snapshot(http, server.url, clients, server.pid)
            await asyncio.sleep(seconds)  # the measured window
            b = await _snapshot(http, server.url, clients, server.pid)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
            await asyncio.gather(*(h.close() for h in https))
    return {
        "publishers": publishers,
        "viewers": viewers,
        "warmup_s": warmup_s,
        "window_s": round(b["at"] - a["at"], 1),
        "viewers_decode": "VP8 decoded by aiortc, not converted to RGB (frames counted)",
        **_account(a, b),
        "cpu_count": os.cpu_count(),
        "load_average_at_a": a["load"],
        "load_average_at_b": b["load"],
    }


async def _connect(
    url: str, publishers: int, viewers: int
) -> tuple[list[LoopbackClient], list[aiohttp.ClientSession]]:
    """Publishers, then viewers round-robin over their rooms; one at a time (a server's
    offers still connecting are limited), each from a loopback address of its own."""
    speech = onset_speech(bursts=15, lead_s=0.5, seed=1).samples  # ~30 s, looped
    https: list[aiohttp.ClientSession] = []
    clients: list[LoopbackClient] = []
    host = urllib.parse.urlsplit(url).hostname or ""
    for k in range(publishers + viewers):
        timeout = aiohttp.ClientTimeout(total=60)
        if host.startswith("127."):
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.{3 + k // 250}.{1 + k % 250}", 0))
            https.append(aiohttp.ClientSession(timeout=timeout, connector=connector))
        else:
            https.append(aiohttp.ClientSession(timeout=timeout))
        if k < publishers:
            client = LoopbackClient(
                url, speech, keep_audio=False, decode_video=False, mic_opus=True, mic_loop=True
            )
        else:
            room = clients[(k - publishers) % publishers].answer["room"]
            client = LoopbackClient(
                url, role="viewer", room=room, keep_audio=False, decode_video=False
            )
        await client.connect(https[-1])
        clients.append(client)
    return clients, https


async def _snapshot(
    http: aiohttp.ClientSession, url: str, clients: list[LoopbackClient], pid: int
) -> dict[str, Any]:
    """Each client's session figures with its own received count at that moment, then the
    server's metrics and the processes' RSS."""
    sessions = []
    for client in clients:
        for _ in range(READ_TRIES):  # a busy worker may miss a relayed request's deadline
            async with http.get(f"{url}/sessions/{client.session_id}") as resp:
                stats = await resp.json() if resp.status == 200 else {}
                status = f"{resp.status} {'' if stats else await resp.text()}"
            if stats:
                break
        sessions.append(
            {"client": client, "received": len(client.video), "stats": stats, "status": status}
        )
    async with http.get(f"{url}/metrics") as resp:
        metrics = _totals(await resp.text())
    rss = {p: _rss(p) for p in process_tree(pid)}
    return {
        "at": time.monotonic(),
        "sessions": sessions,
        "metrics": metrics,
        "rss": rss,
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def _totals(text: str) -> dict[str, float]:
    """``name{label=value,...}`` (the worker label left out, summed over) -> value; and
    ``rss{worker}`` per worker."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "worker"}
            if sample.name == "process_resident_memory_bytes":
                labels = {"worker": sample.labels.get("worker", "0")}
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
            out[key] = out.get(key, 0.0) + sample.value
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _account(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    per_session = []
    offered_total = delivered_total = dropped_total = queued_growth = 0
    video_sent = video_received = 0
    for sa, sb in zip(a["sessions"], b["sessions"], strict=True):
        client = sa["client"]
        if not sa["stats"] or not sb["stats"]:
            answers = [str(sa["status"])[:120], str(sb["status"])[:120]]
            per_session.append({"session_id": client.session_id, "unreadable": answers})
            continue
        published = sb["stats"]["session"]["frames_out"] - sa["stats"]["session"]["frames_out"]
        tracks_a = {t["name"]: t for t in sa["stats"]["tracks"]}
        tracks = []
        for tb in sb["stats"]["tracks"]:
            empty = {"offered": 0, "delivered": 0, "dropped": 0, "queued": 0}
            ta = tracks_a.get(tb["name"], empty)
            # What its queue was given: the session's frames, or for a voice track the mic
            # blocks handed on (``LiveSession.subscribe_voice``).
            offered = tb["offered"] - ta["offered"]
            sent = tb["delivered"] - ta["delivered"]
            dropped = tb["dropped"] - ta["dropped"]
            growth = tb["queued"] - ta["queued"]
            offered_total += offered
            delivered_total += sent
            dropped_total += dropped
            queued_growth += growth
            track = {
                "kind": tb["name"].rsplit("-", 1)[-1],
                "sent": sent,
                "dropped_queue_full": dropped,
                "offered": offered,
                "residual": offered - sent - dropped - growth,
            }
            if track["kind"] == "video":
                received = sb["received"] - sa["received"]
                track["received_by_client"] = received
                track["lost_in_transport"] = sent - received
                video_sent += sent
                video_received += received
            tracks.append(track)
        session = sb["stats"]["session"]
        per_session.append(
            {
                "session_id": client.session_id,
                "role": sb["stats"]["role"],
                "published": published,
                "renders_skipped": session["renders_skipped"]
                - sa["stats"]["session"]["renders_skipped"],
                "tracks": tracks,
            }
        )
    ma, mb = a["metrics"], b["metrics"]

    def delta(key: str) -> float:
        return mb.get(PREFIX + key, 0.0) - ma.get(PREFIX + key, 0.0)

    dropped = {
        reason: delta(f"frames_dropped_total{{reason={reason}}}")
        for reason in ("render_busy", "render_late", "subscriber_queue_full", "interrupt_purge")
    }
    rss = {}
    for key, value in sorted(mb.items()):
        if key.startswith("process_resident_memory_bytes"):
            before = ma.get(key, 0.0)
            rss[key.split("=", 1)[-1].rstrip("}")] = {
                "at_a_mb": round(before / 2**20, 1),
                "at_b_mb": round(value / 2**20, 1),
                "growth_percent": round(100 * (value - before) / before, 2) if before else None,
            }
    return {
        "metrics": {
            "frames_published": delta("frames_published_total"),
            "frames_rendered": delta("frames_rendered_total"),
            "frames_dropped": dropped,
            "frames_sent_video": delta("frames_sent_total{kind=video}"),
            "frames_sent_audio": delta("frames_sent_total{kind=audio}"),
        },
        "balance": {
            # Video subscriptions are offered every frame their session publishes, voice ones
            # every mic block handed on; each item leaves sent, dropped or still queued.
            "offered": offered_total,
            "sent": delivered_total,
            "dropped_queue_full": dropped_total,
            "queued_growth": queued_growth,
            "residual": offered_total - delivered_total - dropped_total - queued_growth,
            "video_sent": video_sent,
            "video_received_by_clients": video_received,
            "video_lost_in_transport": video_sent - video_received,
        },
        "rss_by_worker": rss,
        "rss_processes_mb": {
            str(pid): [round(a["rss"].get(pid, 0) / 2**20, 1), round(size / 2**20, 1)]
            for pid, size in b["rss"].items()
        },
        "per_session": per_session,
    }
