"""``msadtalker bench latency --browser``: mic onset -> mouth presented, in Debian Chromium.

What a person sees, not what an aiortc client sees: Chromium (headless, through playwright)
opens the publisher page with ``?bench=1`` (``web/bench.js``), whose microphone is a signal the
page generates itself (faint noise, then voiced bursts with sharp onsets every ~2 s, the onset
times on the page's clock), and a viewer page in a second tab. Both pages read the mouth off
every frame they present (``requestVideoFrameCallback`` + canvas) within the mouth region of
the server's own renderer (``MouthProbe``: closed and fully open at rest), so the latency of an
onset is the presentation time of the first frame past the open-mouth threshold minus the
onset's time, on one clock (epoch milliseconds of the browser).

Reported: p50/p95 over all onsets, per minute (minute 1 vs the last: creep), Chromium's own
receive figures at each minute (video / audio jitter buffer, receive -> presented), and the
load average with every figure (the machine is shared). Each page also times the onsets in
the voice it receives, where its audio graph gets them (``voice_latency_ms``; the audio
device's output latency comes on top), and so how far the lips trail the voice
(``lips_after_voice_ms``: A/V sync as the page plays it; the viewer page's must stay within
one frame, 40 ms).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msadtalker.errors import ConfigError
from msadtalker.timing import SAMPLE_RATE
from streamer.bench.breakdown import summary
from streamer.bench.mouth import MouthProbe
from streamer.bench.signals import OnsetSpeech

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
TAKE_EVERY_S = 2.0
STATS_EVERY_S = 15.0
PROBE_SCALE = 2  # the page reads every other pixel of the mouth region: plenty, and cheap


def chromium_path() -> str:
    """Debian's chromium (and playwright to drive it), or a clear error naming how to get it."""
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).exists():
        raise ConfigError(f"--browser: chromium not found at {path} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        raise ConfigError("--browser needs playwright: pip install 'msadtalker[bench]'")
    return path


def chromium_args() -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        # Two tabs run side by side: neither may be throttled as "in the background".
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ]


def page_probe(probe: MouthProbe) -> dict[str, Any]:
    """The mouth region for ``web/bench.js``: its bounding box in the video, and per masked
    pixel (row-major in the box) the closed colour and the closed -> open direction."""
    ys, xs = np.nonzero(probe.mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    inside = probe.mask[y0:y1, x0:x1]
    keep = np.zeros_like(inside)
    keep[::PROBE_SCALE, ::PROBE_SCALE] = inside[::PROBE_SCALE, ::PROBE_SCALE]
    rows, cols = np.nonzero(keep)
    closed = probe.closed[y0 + rows, x0 + cols]
    opened = probe.closed + 0.0
    opened[probe.mask] += probe.direction
    direction = opened[y0 + rows, x0 + cols] - closed
    height, width = probe.closed.shape[:2]
    return {
        "x": x0,
        "y": y0,
        "w": x1 - x0,
        "h": y1 - y0,
        "width": width,
        "height": height,
        "index": (rows * (x1 - x0) + cols).tolist(),
        "closed": np.round(closed, 1).ravel().tolist(),
        "direction": np.round(direction, 1).ravel().tolist(),
        "norm": float((direction.astype(np.float64) ** 2).sum()),
    }


def burst_list(speech: OnsetSpeech) -> list[list[float]]:
    """The clip's bursts (16 kHz), which the page plays as its microphone in turn."""
    return [
        np.round(speech.samples[s:e], 5).tolist()
        for s, e in zip(speech.onsets, speech.ends, strict=True)
    ]


def onset_latencies(onsets: np.ndarray, frames: np.ndarray, threshold: float) -> list[float | None]:
    """Per onset (epoch ms): presentation time of the first frame at or after it whose mouth
    is past ``threshold``, minus the onset; None when the mouth was already open at the onset
    (the previous burst's tail) or never opened within 1.5 s. ``frames``: (N, 2) presented
    epoch ms, openness; sorted by time."""
    out: list[float | None] = []
    if not len(frames):
        return [None] * len(onsets)
    times, openness = frames[:, 0], frames[:, 1]
    for onset in onsets:
        first = int(np.searchsorted(times, onset))
        if first == 0 or openness[first - 1] > threshold:
            out.append(None)
            continue
        window = np.nonzero((openness[first:] > threshold) & (times[first:] < onset + 1500))[0]
        out.append(float(times[first + window[0]] - onset) if len(window) else None)
    return out


def voice_latencies(onsets: np.ndarray, voice: np.ndarray) -> list[float | None]:
    """Per mic onset (epoch ms): the first onset heard in the received voice within 1.5 s
    after it, minus the mic onset; None when none was. ``voice``: sorted epoch ms."""
    out: list[float | None] = []
    for onset in onsets:
        first = int(np.searchsorted(voice, onset))
        heard = voice[first] if first < len(voice) else None
        out.append(float(heard - onset) if heard is not None and heard < onset + 1500 else None)
    return out


@dataclass
class PageLog:
    """What one page measured, accumulated over the run."""

    # (presented epoch ms, mouth openness, received epoch ms or None, RTP timestamp or None)
    frames: list[tuple[float, float, float | None, float | None]] = field(default_factory=list)
    onsets: list[list[float]] = field(default_factory=list)
    voice: list[float] = field(default_factory=list)  # epoch ms: onsets in the received voice
    stats: list[dict[str, Any]] = field(default_factory=list)

    def add(self, taken: dict[str, Any]) -> None:
        self.voice.extend(float(v) for v in taken.get("voice", []))
        self.frames.extend(
            (
                float(f[0]),
                float(f[1]),
                None if f[2] is None else float(f[2]),
                None if len(f) < 4 or f[3] is None else float(f[3]),
            )
            for f in taken["frames"]
        )
        self.onsets.extend(taken["onsets"])


def _minute_of(onsets: np.ndarray, start: float) -> np.ndarray:
    return ((onsets - start) // 60_000).astype(int) + 1


def in_run(onsets: np.ndarray, minutes: float) -> np.ndarray:
    """The onsets within ``minutes`` of the first (the last poll may bring a few more)."""
    if not len(onsets):
        return onsets
    return onsets[onsets < onsets[0] + minutes * 60_000]


def page_figures(
    log_: PageLog, onsets: np.ndarray, start: float, threshold: float
) -> dict[str, Any]:
    frames = np.array([[f[0], f[1]] for f in log_.frames], dtype=np.float64).reshape(-1, 2)
    frames = frames[np.argsort(frames[:, 0], kind="stable")] if len(frames) else frames
    latencies = onset_latencies(onsets, frames, threshold)
    minutes = _minute_of(onsets, start)
    valid = np.array([v is not None for v in latencies], dtype=bool)
    values = np.array([v if v is not None else np.nan for v in latencies])
    frame_minutes = frame_timing_per_minute(log_.frames, start)
    chromium = chromium_receive_figures(log_.stats)
    sync_minutes = sync_per_minute(chromium)
    per_minute = []
    for minute in sorted(set(minutes.tolist())):
        chosen = (minutes == minute) & valid
        per_minute.append(
            {
                "minute": minute,
                **summary(values[chosen].tolist()),
                **frame_minutes.get(minute, {}),
                **sync_minutes.get(minute, {}),
            }
        )
    received = [f[0] - f[2] for f in log_.frames if f[2] is not None]
    voice = voice_latencies(onsets, np.sort(np.asarray(log_.voice, dtype=np.float64)))
    # Lips after voice (+) or before it (-), per onset timed both ways.
    pairs = zip(latencies, voice, strict=True)
    offsets = [m - v for m, v in pairs if m is not None and v is not None]
    return {
        "latency_ms": summary(values[valid].tolist()),
        "voice_latency_ms": summary([v for v in voice if v is not None]),
        "voice_onsets_heard": len(log_.voice),
        "lips_after_voice_ms": summary(offsets),
        "lips_after_voice_per_onset_ms": [round(v, 1) for v in offsets],
        "minute_first": per_minute[0] if per_minute else {"n": 0},
        "minute_last": per_minute[-1] if per_minute else {"n": 0},
        "per_minute": per_minute,
        "onsets": len(onsets),
        "measured": int(valid.sum()),
        "frames_presented": len(frames),
        "receive_to_presented_ms": summary(received),
        "chromium": chromium,
    }


def frame_timing_per_minute(
    frames: list[tuple[float, float, float | None, float | None]], start: float
) -> dict[int, dict[str, float]]:
    """Per minute of the run: how long Chromium held a received frame before presenting it
    (p50), and when frames arrived against the time their RTP timestamps state (p50 of
    received - rtp / 90, relative to minute 1's): a growing arrival figure is the stream
    falling behind its own clock (the server or the mic clock), a growing hold with a flat
    arrival is the receiver's doing (A/V sync following its audio delay)."""
    timed = np.array(
        [(f[0], f[2], f[3]) for f in frames if f[2] is not None and f[3] is not None],
        dtype=np.float64,
    ).reshape(-1, 3)
    if not len(timed):
        return {}
    # RTP timestamps wrap at 2**32 (13 h at 90 kHz): unwrap before comparing.
    rtp_ms = np.unwrap(timed[:, 2], period=2.0**32) / 90.0
    arrival = timed[:, 1] - rtp_ms
    minute = _minute_of(timed[:, 0], start)
    out: dict[int, dict[str, float]] = {}
    base: float | None = None
    for m in sorted(set(minute.tolist())):
        chosen = minute == m
        late = float(np.median(arrival[chosen]))
        base = late if base is None else base
        out[m] = {
            "hold_ms_p50": round(float(np.median(timed[chosen, 0] - timed[chosen, 1])), 1),
            "arrival_vs_rtp_ms": round(late - base, 1),
        }
    return out


def sync_per_minute(chromium: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per minute of the run (by the stats' time): the medians of the lips' lead over the
    voice (the page's own reading, else Chromium's estimate), of the voice's lag behind the
    mic, and of the picture hold the page set."""
    out: dict[int, dict[str, float]] = {}
    for minute in sorted({int(e["t_s"] // 60) + 1 for e in chromium}):
        entries = [e for e in chromium if int(e["t_s"] // 60) + 1 == minute]
        # The lead: the page's own reading where it has one, else Chromium's.
        leads = [
            e["page_lips_lead_ms"]
            if e.get("page_lips_lead_ms") is not None
            else e.get("lips_lead_ms")
            for e in entries
        ]
        columns = {
            "lips_lead_ms": leads,
            "voice_lag_ms": [e.get("voice_lag_ms") for e in entries],
            "video_hold_set_ms": [e.get("video_hold_set_ms") for e in entries],
        }
        out[minute] = {
            name: round(float(np.median([v for v in values if v is not None])), 1)
            for name, values in columns.items()
            if any(v is not None for v in values)
        }
    return out


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def chromium_receive_figures(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chromium's jitter buffer delays over each interval between two stats snapshots."""
    out = []
    for before, after in zip(stats, stats[1:], strict=False):
        entry: dict[str, Any] = {"t_s": after["t_s"], "load_1min": after["load_1min"]}
        for kind in ("video", "audio"):
            a, b = after.get("rtc", {}).get(kind), before.get("rtc", {}).get(kind)
            if not a or not b:
                continue
            emitted = (a.get("jitterBufferEmittedCount") or 0) - (
                b.get("jitterBufferEmittedCount") or 0
            )
            if emitted > 0:
                delay = (a.get("jitterBufferDelay") or 0) - (b.get("jitterBufferDelay") or 0)
                entry[f"{kind}_jitter_buffer_ms"] = round(1000 * delay / emitted, 1)
            target = (a.get("jitterBufferTargetDelay") or 0) - (
                b.get("jitterBufferTargetDelay") or 0
            )
            if emitted > 0 and target:
                entry[f"{kind}_jitter_target_ms"] = round(1000 * target / emitted, 1)
        # Chromium's own A/V offset: the sender's clock time (our reports: mic time) of the
        # picture shown minus that of the voice playing, sampled together: > 0 lips lead.
        v, a = after.get("rtc", {}).get("video"), after.get("rtc", {}).get("audio")
        if v and a and v.get("estimatedPlayoutTimestamp") and a.get("estimatedPlayoutTimestamp"):
            entry["lips_lead_ms"] = round(
                float(v["estimatedPlayoutTimestamp"]) - float(a["estimatedPlayoutTimestamp"]), 1
            )
        held = after.get("rtc", {}).get("avsync")
        if held:
            # The page's own lip sync (web/avsync.js): its reading and the holds it set.
            entry["page_lips_lead_ms"] = _rounded(held.get("leadMs"))
            entry["picture_lag_ms"] = _rounded(held.get("pictureLagMs"))
            entry["voice_lag_ms"] = _rounded(held.get("voiceLagMs"))
            entry["video_hold_set_ms"] = held.get("videoHoldMs")
            entry["audio_hold_set_ms"] = held.get("audioHoldMs")
        # The audio output path's own delay (after the jitter buffer), which Chromium's A/V
        # sync adds to the audio side: a device whose buffer grows makes it hold the video.
        a, b = after.get("rtc", {}).get("playout"), before.get("rtc", {}).get("playout")
        if a and b:
            samples = (a.get("totalSamplesCount") or 0) - (b.get("totalSamplesCount") or 0)
            delay = (a.get("totalPlayoutDelay") or 0) - (b.get("totalPlayoutDelay") or 0)
            if samples > 0:
                entry["audio_playout_ms"] = round(1000 * delay / samples, 1)
        out.append(entry)
    return out


@dataclass(frozen=True)
class BrowserRun:
    minutes: float
    threshold: float
    listen: bool = False
    viewer: bool = True
    page_query: str = ""  # extra query for the publisher page (web/app.js: sync, ptime, playout)
    viewer_query: str = ""  # extra query for the viewer page (web/app.js: avsync, lead)
    pause_s: float = 0.0  # the server stops (SIGSTOP) this long, half-way through the run


async def _until(page: Any, expression: str, what: str, timeout_s: float = 30.0) -> None:
    """Until ``expression`` is true in ``page`` (polled with ``evaluate``, which the pages'
    CSP allows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await page.evaluate(expression):
        if loop.time() > deadline:
            error = await page.evaluate("window.msadtalker && window.msadtalker.error")
            raise RuntimeError(f"{what}: not within {timeout_s:g} s (page error: {error})")
        await asyncio.sleep(0.1)


async def _open(browser: Any, address: str, setup: dict[str, Any]) -> Any:
    page = await browser.new_page()
    page.on("pageerror", lambda exc: log.warning("page error: %s", exc))
    await page.goto(address)
    await _until(page, "!!window.msadtalkerBench", "the page's bench hook")
    await page.evaluate("(setup) => window.msadtalkerBench.configure(setup)", setup)
    return page


async def measure_in_browser(
    url: str,
    speech: OnsetSpeech,
    probe: MouthProbe,
    run: BrowserRun,
    pause: Callable[[bool], None] | None = None,
) -> dict[str, Any]:
    """Drive Chromium against the server at ``url`` for ``run.minutes`` (module docstring).
    ``pause(True)`` / ``pause(False)``: stop / resume the server (``run.pause_s``): to the
    pages, a network that carries nothing either way for that long."""
    from playwright.async_api import async_playwright

    setup = {
        "probe": page_probe(probe),
        "bursts": burst_list(speech),
        "burstRate": SAMPLE_RATE,
        "periodS": 2.0,
        "leadS": 1.5,
    }
    chromium = chromium_path()
    logs = {"publisher": PageLog(), "viewer": PageLog()}
    load_start = os.getloadavg()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=chromium_args())
        try:
            query = "&".join(
                q for q in ("bench=1", "listen=1" if run.listen else "", run.page_query) if q
            )
            publisher = await _open(browser, f"{url}/?{query}", setup)
            await publisher.click("#start")
            await _until(publisher, "window.msadtalker.status === 'live'", "the publisher live")
            pages = {"publisher": publisher}
            if run.viewer:
                room = await publisher.evaluate("window.msadtalker.room")
                extra = f"&{run.viewer_query}" if run.viewer_query else ""
                viewer = await _open(browser, f"{url}/viewer?room={room}&bench=1{extra}", setup)
                await viewer.click("#start")
                await _until(viewer, "window.msadtalker.status === 'live'", "the viewer live")
                pages["viewer"] = viewer
            started = time.monotonic()
            next_stats = 0.0
            paused: dict[str, Any] | None = None
            while (elapsed := time.monotonic() - started) < run.minutes * 60:
                await asyncio.sleep(TAKE_EVERY_S)
                for name, page in pages.items():
                    logs[name].add(await page.evaluate("window.msadtalkerBench.take()"))
                if paused is None and pause is not None and elapsed >= run.minutes * 30:
                    paused = await pause_server(pages, pause, run.pause_s)
                if elapsed >= next_stats:
                    next_stats += STATS_EVERY_S
                    for name, page in pages.items():
                        rtc = await page.evaluate("window.msadtalkerBench.rtcStats()")
                        logs[name].stats.append(
                            {"t_s": round(elapsed, 1), "load_1min": os.getloadavg()[0], "rtc": rtc}
                        )
            for name, page in pages.items():
                logs[name].add(await page.evaluate("window.msadtalkerBench.take()"))
            output_latency = await publisher.evaluate(
                "window.msadtalkerBench.audio.context.outputLatency"
            )
            server_session = await publisher.evaluate(
                "fetch('/sessions/' + window.msadtalker.sessionId).then((r) => r.json())"
            )
            await publisher.click("#stop")
        finally:
            await browser.close()
    onsets = np.array(sorted(o[0] for o in logs["publisher"].onsets), dtype=np.float64)
    onset_log = in_run(onsets, run.minutes)
    start = float(onset_log[0]) if len(onset_log) else 0.0
    result: dict[str, Any] = {
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "minutes": run.minutes,
        "threshold": round(run.threshold, 3),
        "listen": run.listen,
        "page_query": run.page_query,
        "viewer_query": run.viewer_query,
        "audio_output_latency_ms": round(1000 * float(output_latency or 0), 2),
    }
    session = server_session.get("session", {}) if isinstance(server_session, dict) else {}
    result["server"] = {
        key: session.get(key)
        for key in (
            "latency_ms_designed",
            "pipeline_delay_frames",
            "step_ms_p50",
            "render_ms_p50",
            "dropped_frames",
            "frames_out",
            "ingest",
        )
        if key in session
    }
    for name in pages:
        result[name] = page_figures(logs[name], onset_log, start, run.threshold)
    if paused is not None:
        result["pause"] = after_pause(paused, logs["publisher"], onset_log, run.threshold)
    return result


async def measure_slow_path(url: str, minutes: float) -> dict[str, Any]:
    """A renderer slower than real time (the neural path on a CPU): no mouth latency to
    measure (a picture takes seconds), so what the publisher page gets: frames and voice
    packets per second, the notice it shows, and where the server's time goes."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=chromium_args())
        try:
            page = await _open(browser, f"{url}/?bench=1", {"bursts": [[0.1, -0.1]]})
            await page.click("#start")
            await _until(page, "window.msadtalker.status === 'live'", "the publisher live")
            before = await page.evaluate("window.msadtalkerBench.rtcStats()")
            frames = await page.evaluate("window.msadtalker.framesPresented")
            started = time.monotonic()
            await asyncio.sleep(minutes * 60)
            elapsed = time.monotonic() - started
            after = await page.evaluate("window.msadtalkerBench.rtcStats()")
            shown = await page.evaluate("window.msadtalker.framesPresented") - frames
            notice = await page.evaluate("window.msadtalker.notice")
            session = await page.evaluate(
                "fetch('/sessions/' + window.msadtalker.sessionId).then((r) => r.json())"
            )
            await page.click("#stop")
        finally:
            await browser.close()

    def rate(kind: str, key: str) -> float | None:
        a, b = (after or {}).get(kind), (before or {}).get(kind)
        if not a or not b:
            return None
        return round(((a.get(key) or 0) - (b.get(key) or 0)) / elapsed, 2)

    figures = session.get("session", {}) if isinstance(session, dict) else {}
    return {
        "page": {
            "frames_presented_per_s": round(shown / elapsed, 2),
            "voice_packets_per_s": rate("audio", "packetsReceived"),
            "voice_packets_expected_per_s": 50,
            "notice": notice,
        },
        "server": {
            key: figures.get(key)
            for key in ("step_ms_p50", "render_ms_p50", "fps", "frames_out", "dropped_frames")
        },
    }


async def pause_server(
    pages: dict[str, Any], pause: Callable[[bool], None], seconds: float
) -> dict[str, Any]:
    """Stop the server for ``seconds``; what each page said 1.5 s in, and when it resumed
    (epoch ms on the browser's clock)."""
    now = "performance.timeOrigin + performance.now()"
    pause(True)
    try:
        await asyncio.sleep(min(1.5, seconds))
        said = {
            name: await page.evaluate("[window.msadtalker.status, window.msadtalker.notice]")
            for name, page in pages.items()
        }
        await asyncio.sleep(max(0.0, seconds - 1.5))
    finally:
        pause(False)
    return {"pause_s": seconds, "resumed": await pages["publisher"].evaluate(now), "said": said}


def after_pause(
    paused: dict[str, Any], log_: PageLog, onsets: np.ndarray, threshold: float
) -> dict[str, Any]:
    """The publisher's latency floor before the pause (p50) and the latency of the first
    onsets after it, with when they came (s after the server resumed)."""
    frames = np.array([[f[0], f[1]] for f in log_.frames], dtype=np.float64).reshape(-1, 2)
    frames = frames[np.argsort(frames[:, 0], kind="stable")] if len(frames) else frames
    latencies = onset_latencies(onsets, frames, threshold)
    resumed = float(paused["resumed"])
    before = [v for o, v in zip(onsets, latencies, strict=True) if v is not None and o < resumed]
    after: list[dict[str, Any]] = []
    for onset, latency in zip(onsets, latencies, strict=True):
        if onset < resumed or len(after) == 3:
            continue
        near = frames[(frames[:, 0] >= onset - 200) & (frames[:, 0] < onset + 1500)]
        after.append(
            {
                "onset_after_resume_s": round(float(onset - resumed) / 1000, 2),
                "latency_ms": None if latency is None else round(latency, 1),
                # Why an onset has no latency: the frames shown around it.
                "frames_shown": len(near),
                "openness_at_onset": round(float(near[0, 1]), 3) if len(near) else None,
                "openness_max": round(float(near[:, 1].max()), 3) if len(near) else None,
            }
        )
    return {
        "pause_s": paused["pause_s"],
        "pages_said_during": paused["said"],
        "floor_p50_before_ms": summary(before).get("p50"),
        "first_onsets_after": after,
    }
