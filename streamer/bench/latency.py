"""``msadtalker bench latency``: mic sample -> mouth visible on the receiver, over loopback.

A ``msadtalker serve`` child process serves the avatar; an aiortc client sends speech with
sharp onsets as its microphone (paced like a real mic) and watches the video it gets back.

* Latency of an onset: wall time at which the first received frame shows the mouth open
  (``MouthProbe``: the mouth region moved past ``threshold`` of the way from closed to open)
  minus the wall time at which the onset sample was captured. p50 / p95 over the onsets.
* A/V sync of the returned audio vs video, per frame, for a receiver that lines the two up
  (a browser does, for the tracks of one stream): it plays both on one steady schedule,
  ``base + media time``, ``base`` the later of the two tracks' 95th percentile of ``arrival -
  media time`` (5 % of packets or frames may come late: concealed or shown late); a picture
  that arrives after its slot shows that much late (+ ms), else on time (0). p50 / p95 over
  all frames. The voice leaves the server ahead of its picture (``streamer.session``):
  ``voice_ahead_of_picture_ms`` is how much, i.e. how long such a receiver holds the voice.

* Breakdown of each onset's latency into the rest of its frame, the mouth's rise, the
  pipeline's designed lookahead and the overhead (transport, processing, coding): see
  ``streamer.bench.breakdown``.

The mouth probe, and the open-mouth threshold (30 % of the median peak opening of the bursts in
the offline render of the same speech), come from the same stages the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.assembly import StageFactory
from streamer.bench.breakdown import (
    FRAME_MS,
    OnsetBreakdown,
    frame_overhead_ms,
    onset_breakdown,
    session_offset,
    summary,
)
from streamer.bench.browser import (
    BrowserRun,
    chromium_path,
    measure_in_browser,
    measure_slow_path,
)
from streamer.bench.live import ServerProcess, session_stats
from streamer.bench.mouth import MouthProbe
from streamer.bench.signals import OnsetSpeech, onset_speech
from streamer.io.webrtc import VIDEO_CLOCK
from streamer.io.webrtc import VIDEO_TICKS_PER_FRAME as VIDEO_TICKS
from streamer.io.webrtc_client import LoopbackClient
from streamer.pipeline import Pipeline
from streamer.realtime import FrameCost, measure_frame_cost
from streamer.types import AudioChunk

log = logging.getLogger(__name__)

LIVE = True  # --lookahead-ms is the live sessions' (server.lookahead_ms)
DESCRIPTION = "live: mic sample -> mouth visible on the receiver (p50/p95) and A/V sync"
AUDIO_RATE = 48_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bursts", type=int, default=12, help="speech onsets to time")
    parser.add_argument("--jitter-ms", type=int, help="server ingest jitter allowance")
    parser.add_argument("--avatar", type=Path, metavar="IMG")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR")
    parser.add_argument(
        "--browser",
        action="store_true",
        help="measure in Debian Chromium (playwright): publisher and viewer pages",
    )
    parser.add_argument(
        "--minutes", type=float, default=1.0, help="--browser: length of the session"
    )
    parser.add_argument(
        "--listen",
        action="store_true",
        help="--browser: the publisher page plays the returned voice",
    )
    parser.add_argument(
        "--no-viewer", action="store_true", help="--browser: the publisher page alone"
    )
    parser.add_argument(
        "--pause-s",
        type=float,
        default=0.0,
        help="--browser: stop the server (SIGSTOP) this long half-way through, and report "
        "what the pages said and the latency after it",
    )
    parser.add_argument(
        "--page-query",
        default="",
        metavar="Q",
        help="--browser: extra query for the publisher page (before/after figures: sync=1 "
        "keeps the returned voice in the lips' sync group, ptime=20 the mic's 20 ms packets, "
        "playout=0 drops the zero playout delay)",
    )
    parser.add_argument(
        "--viewer-query",
        default="",
        metavar="Q",
        help="--browser: extra query for the viewer page (avsync=browser: Chromium lines "
        "the lips up with the voice instead of the page; lead=MS: the lips' allowed lead)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.assembly import stage_factory
    from streamer.commands._options import config_from_args

    jitter = {"server.jitter_ms": getattr(args, "jitter_ms", None)}
    config = config_from_args(args, jitter, live=True)
    stages = stage_factory(
        config, args.avatar, args.checkpoints, lookahead_ms=config.server.lookahead_ms
    )
    argv = _serve_flags(args)
    speech = onset_speech(bursts=args.bursts, seed=getattr(args, "seed", None) or 0)
    if getattr(args, "browser", False):
        chromium_path()  # before any work: a clear error when chromium or playwright is missing
        options = BrowserRun(
            minutes=args.minutes,
            threshold=0.0,
            listen=args.listen,
            viewer=not args.no_viewer,
            page_query=args.page_query,
            viewer_query=args.viewer_query,
            pause_s=args.pause_s,
        )
        return asyncio.run(bench_browser_latency(stages, speech, argv, options))
    return asyncio.run(bench_latency(stages, speech, argv))


async def bench_browser_latency(
    stages: StageFactory,
    speech: OnsetSpeech,
    serve_argv: Sequence[str],
    options: BrowserRun,
    url: str | None = None,
) -> dict[str, Any]:
    """The browser measurement (``streamer.bench.browser``) against ``url`` or a fresh
    ``msadtalker serve`` child; the open-mouth threshold as for the aiortc client."""
    cost = await asyncio.to_thread(measure_frame_cost, stages)
    if not cost.real_time:
        return await _slow_path(cost, serve_argv, options, url)
    probe = MouthProbe.from_render_stage(list(stages())[-1])
    run = dataclasses.replace(options, threshold=open_threshold(stages, speech, probe))
    if url is not None:
        return await measure_in_browser(url, speech, probe, run)
    async with ServerProcess(list(serve_argv)) as server:

        def pause(stop: bool) -> None:
            os.kill(server.pid, signal.SIGSTOP if stop else signal.SIGCONT)

        return await measure_in_browser(
            server.url, speech, probe, run, pause if run.pause_s > 0 else None
        )


def _serve_flags(args: argparse.Namespace) -> list[str]:
    flags: list[str] = []
    for name in ("avatar", "checkpoints", "config"):
        value = getattr(args, name, None)
        if value is not None:
            flags += [f"--{name}", str(value)]
    for name in ("lookahead_ms", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


async def bench_latency(
    stages: StageFactory,
    speech: OnsetSpeech,
    serve_argv: Sequence[str] = (),
    url: str | None = None,
) -> dict[str, Any]:
    """Run the measurement against ``url`` (or a fresh ``msadtalker serve`` child)."""
    probe = MouthProbe.from_render_stage(list(stages())[-1])
    threshold = open_threshold(stages, speech, probe)
    if url is not None:
        return await measure(url, speech, probe, threshold)
    async with ServerProcess(list(serve_argv)) as server:
        return await measure(server.url, speech, probe, threshold)


async def _slow_path(
    cost: FrameCost, serve_argv: Sequence[str], options: BrowserRun, url: str | None
) -> dict[str, Any]:
    """This machine cannot render the stages in real time: say so, and what a page gets."""
    minutes = min(options.minutes, 0.5)
    head: dict[str, Any] = {
        "real_time": False,
        "ms_per_frame": round(cost.ms_per_frame, 1),
        "frames_timed": cost.frames_timed,
        "budget_ms": cost.budget_ms,
        "note": "slow: this machine cannot render these stages in real time (a GPU can); "
        "the mouth latency is not measurable, the figures say what a page gets instead",
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    if url is not None:
        return {**head, **await measure_slow_path(url, minutes)}
    async with ServerProcess(list(serve_argv)) as server:
        return {**head, **await measure_slow_path(server.url, minutes)}


def open_threshold(stages: StageFactory, speech: OnsetSpeech, probe: MouthProbe) -> float:
    """30 % of the median peak opening of the bursts, in the offline render of ``speech``."""
    pipeline: Pipeline[Any] = Pipeline(list(stages()))
    chunks = (
        AudioChunk(speech.samples[i : i + 4000], i) for i in range(0, len(speech.samples), 4000)
    )
    openness = np.array([probe.openness(frame.image) for frame in pipeline.run(chunks)])
    spf = SAMPLE_RATE // FPS
    peaks = [
        float(openness[s // spf : e // spf + 1].max())
        for s, e in zip(speech.onsets, speech.ends, strict=True)
    ]
    return max(0.05, 0.3 * float(np.median(peaks)))


async def measure(
    url: str,
    speech: OnsetSpeech,
    probe: MouthProbe,
    threshold: float,
) -> dict[str, Any]:
    load_start = os.getloadavg()  # the machine is shared: every figure comes with its load
    async with aiohttp.ClientSession() as http:
        client = LoopbackClient(url, speech.samples, on_video=probe.openness)
        await client.connect(http)
        try:
            await asyncio.sleep(speech.duration_s + 0.5)
            stats = await session_stats(http, url, client.session_id)
        finally:
            await client.aclose()
    mic = client.mic
    assert mic is not None
    arrivals = np.array([f.arrival for f in client.video])
    opened = np.array([float(f.value) for f in client.video])
    frames = np.array([f.pts // VIDEO_TICKS for f in client.video])
    sync, voice_lead = _av_sync_ms(client)
    session = stats.get("session", {})
    delay = int(session.get("pipeline_delay_frames", 0))
    returned = [(p.pts, p.samples) for p in client.received_audio]
    offsets = session_offset(returned, speech.samples, speech.onsets)

    per_onset: list[dict[str, Any]] = []
    parts: list[OnsetBreakdown] = []
    for onset, offset in zip(speech.onsets, offsets, strict=True):
        captured = mic.capture_time(onset)
        after = np.nonzero((arrivals >= captured) & (opened > threshold))[0]
        before = np.nonzero(arrivals < captured)[0]
        entry: dict[str, Any] = {"onset_s": round(onset / SAMPLE_RATE, 4)}
        if not len(after) or (len(before) and opened[before[-1]] > threshold):
            entry["valid"] = False
            per_onset.append(entry)
            continue
        shown = float(arrivals[after[0]])
        entry["latency_ms"] = round((shown - captured) * 1000.0, 2)
        entry["valid"] = True
        if offset is not None:
            part = onset_breakdown(
                onset, int(frames[after[0]]), shown, offset, mic.capture_time, delay
            )
            parts.append(part)
            entry.update(
                fill_ms=round(part.fill_ms, 2),
                ramp_ms=round(part.ramp_ms, 2),
                overhead_ms=round(part.overhead_ms, 2),
            )
        per_onset.append(entry)

    latencies = [e["latency_ms"] for e in per_onset if "latency_ms" in e]
    overheads = []
    known = [(o, off) for o, off in zip(speech.onsets, offsets, strict=True) if off is not None]
    if known:
        onset_at = np.array([o + off for o, off in known])  # session positions of the onsets
        for k, r in zip(frames, arrivals, strict=True):
            nearest = int(np.argmin(np.abs(onset_at - int(k) * SAMPLES_PER_FRAME)))
            offset = known[nearest][1]
            last = (int(k) + 1) * SAMPLES_PER_FRAME - offset
            if 0 < last <= len(speech.samples):
                overheads.append(
                    frame_overhead_ms(int(k), float(r), offset, mic.capture_time, delay)
                )
    return {
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "latency_ms": summary(latencies),
        "breakdown_ms": {
            "designed": round(delay * FRAME_MS, 1),
            "fill": summary([p.fill_ms for p in parts]),
            "ramp": summary([p.ramp_ms for p in parts]),
            "overhead_at_onsets": summary([p.overhead_ms for p in parts]),
            "overhead_all_frames": summary(overheads),
            "server_motion_step_p50": session.get("step_ms_p50"),
            "server_render_p50": session.get("render_ms_p50"),
            "session_offset_samples": summary([off for _, off in known]),
        },
        "av_sync_ms": summary(sync),
        "voice_ahead_of_picture_ms": voice_lead,
        "onsets": len(speech.onsets),
        "measured": len(latencies),
        "threshold": round(threshold, 3),
        "designed_ms": session.get("latency_ms_designed"),
        "server_step_ms_p50": session.get("step_ms_p50"),
        "server_dropped_frames": session.get("dropped_frames"),
        "frames_received": len(client.video),
        "per_onset": per_onset,
    }


def _av_sync_ms(client: LoopbackClient) -> tuple[list[float], float | None]:
    """Per received frame: how late its picture shows for a receiver that lines voice and
    picture up (module docstring); and how long before its picture the voice arrives (the
    difference of the two schedules' bases, ms)."""
    packets = client.received_audio
    if not packets or not client.video:
        return [], None
    # Like a receiver's jitter buffer, each schedule lets the latest 5 % of its media be late
    # rather than delay everything for them.
    voice_base = float(np.percentile([p.arrival - p.pts / AUDIO_RATE for p in packets], 95))
    picture_base = float(np.percentile([f.arrival - f.pts / VIDEO_CLOCK for f in client.video], 95))
    base = max(voice_base, picture_base)
    late = [max(0.0, f.arrival - (base + f.pts / VIDEO_CLOCK)) * 1000.0 for f in client.video]
    return late, round((picture_base - voice_base) * 1000.0, 2)
