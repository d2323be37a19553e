"""``msadtalker bench latency``: mic sample -> mouth visible on the receiver, over loopback.

A ``msadtalker serve`` child process serves the avatar; an aiortc client sends speech with
sharp onsets as its microphone (paced like a real mic) and watches the video it gets back.

* Latency of an onset: wall time at which the first received frame shows the mouth open
  (``MouthProbe``: the mouth region moved past ``threshold`` of the way from closed to open)
  minus the wall time at which the onset sample was captured. p50 / p95 over the onsets.
* A/V sync error of the returned audio vs video, per frame: the receiver plays the audio at
  the earliest steady schedule its arrivals allow (``base + pts``, ``base`` = 95th percentile
  of ``arrival - pts``: 5 % of packets may be late and concealed); frame ``k``'s sound starts
  at that schedule's ``k * 40 ms`` (both tracks start at the session's first frame and their
  time stamps follow the frame index) and its picture shows when it arrives. The error is
  picture time - sound time: positive = video late. p50 / p95 over all frames.

* Breakdown of each onset's latency into the rest of its frame, the mouth's rise, the
  pipeline's designed lookahead and the overhead (transport, processing, coding): see
  ``streamer.bench.breakdown``.

The mouth probe, and the open-mouth threshold (30 % of the median peak opening of the bursts in
the offline render of the same speech), come from the same stages the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
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
from streamer.bench.live import ServerProcess, session_stats
from streamer.bench.mouth import MouthProbe
from streamer.bench.signals import OnsetSpeech, onset_speech
from streamer.io.webrtc_client import LoopbackClient
from streamer.pipeline import Pipeline
from streamer.types import AudioChunk

log = logging.getLogger(__name__)

LIVE = True  # --lookahead-ms is the live sessions' (server.lookahead_ms)
DESCRIPTION = "live: mic sample -> mouth visible on the receiver (p50/p95) and A/V sync"
AUDIO_RATE = 48_000
VIDEO_TICKS = 3600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bursts", type=int, default=12, help="speech onsets to time")
    parser.add_argument("--jitter-ms", type=int, help="server ingest jitter allowance")
    parser.add_argument("--avatar", type=Path, metavar="IMG")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR")


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
    return asyncio.run(bench_latency(stages, speech, argv))


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
    sync = _av_sync_ms(client)
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
        "av_sync_ms": {
            **summary(sync),
            "p95_abs": round(float(np.percentile(np.abs(sync), 95)), 2) if sync else None,
        },
        "onsets": len(speech.onsets),
        "measured": len(latencies),
        "threshold": round(threshold, 3),
        "designed_ms": session.get("latency_ms_designed"),
        "server_step_ms_p50": session.get("step_ms_p50"),
        "server_dropped_frames": session.get("dropped_frames"),
        "frames_received": len(client.video),
        "per_onset": per_onset,
    }


def _av_sync_ms(client: LoopbackClient) -> list[float]:
    """Per received frame: picture arrival - start of its sound at the earliest audio
    playout schedule (module docstring)."""
    packets = client.received_audio
    if not packets or not client.video:
        return []
    # The schedule must not play a packet before it arrived; like a receiver's jitter buffer,
    # it lets the latest 5 % of packets be concealed rather than delay everything for them.
    base = float(np.percentile([p.arrival - p.pts / AUDIO_RATE for p in packets], 95))
    per_frame = AUDIO_RATE // FPS  # 1920 samples of audio per video frame
    last_audio = max(p.pts for p in packets) // per_frame
    out = []
    for frame in client.video:
        index = frame.pts // 3600
        if index <= last_audio:
            out.append((frame.arrival - (base + index * per_frame / AUDIO_RATE)) * 1000.0)
    return out
