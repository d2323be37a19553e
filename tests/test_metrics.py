"""Prometheus metrics: what the sessions and the server count, in one registry per app; and
one scrape of ``serve --workers 2`` that shows both workers."""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from live_fakes import VirtualMic, eventually, fake_stages, speech_like
from prometheus_client.parser import text_string_to_metric_families

from streamer.clock import VirtualClock
from streamer.config import Config, ServerConfig
from streamer.io.webrtc_client import LoopbackClient
from streamer.server.app import make_app
from streamer.server.ids import parse_id
from streamer.server.metrics import ServerMetrics, cluster_exposition
from streamer.server.state import STATE, ServerState
from streamer.session import LiveSession

REPO = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Sample (name, labels) -> value of a Prometheus text exposition (which must parse)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def _state(config: Config | None = None) -> ServerState:
    config = config or Config(server=ServerConfig(jitter_ms=20))
    return ServerState(config, lambda: fake_stages(config), VirtualClock)


# ------------------------------------------------------------------ sessions' counters


async def test_the_drop_policy_counts_and_they_survive_the_sessions_close() -> None:
    """A subscriber that never reads (queue drops), a barge-in (purged frames) and late mic
    audio all show up by reason; closing the session moves its counts into the totals, so no
    counter goes backwards."""
    state = _state()
    metrics = state.metrics
    clock = VirtualClock()
    config = Config()
    session = LiveSession(fake_stages(config), clock, ServerConfig(jitter_ms=20), observer=metrics)
    stuck = session.subscribe("never-read", maxsize=2)
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.2, 2.0)], 2.0))
    await mic.run(1.0)
    session.interrupt()
    await mic.run(0.6)
    live = parse(metrics.exposition().decode())
    stats = session.stats
    assert value(live, "msadtalker_frames_published_total") == stats.frames_out > 30
    assert value(live, "msadtalker_frames_rendered_total") == stats.frames_rendered
    queue_drops = value(live, "msadtalker_frames_dropped_total", reason="subscriber_queue_full")
    assert queue_drops == stuck.dropped > 0
    purged = value(live, "msadtalker_frames_dropped_total", reason="interrupt_purge")
    assert purged == stats.purged_on_interrupt > 0
    assert value(live, "msadtalker_interrupts_total") == 1
    received = value(live, "msadtalker_ingest_samples_total", outcome="received")
    assert received == session.ingest.stats.samples_in > 0
    assert value(live, "msadtalker_motion_step_seconds_count") == stats.ticks
    assert value(live, "msadtalker_render_seconds_count") == stats.frames_rendered
    assert value(live, "msadtalker_ingest_buffered_seconds_count") == stats.ticks

    await session.aclose()
    closed = ours(metrics)
    counters = [k for k in live if k[0].endswith("_total") and k[0].startswith("msadtalker_")]
    assert counters
    for key in counters:
        assert closed[key] == live[key], key
    metrics.closed(session)  # told twice: counted once
    assert ours(metrics) == closed


def ours(metrics: ServerMetrics) -> Samples:
    """The ``msadtalker_`` samples of one process (the process collector's move by themselves)."""
    samples = parse(metrics.exposition().decode())
    return {k: v for k, v in samples.items() if k[0].startswith("msadtalker_")}


async def test_a_pipeline_failure_is_counted() -> None:
    class Broken:
        delay_frames = 0

        def push(self, item: Any) -> list[Any]:
            raise RuntimeError("stage failed")

        def flush(self) -> list[Any]:
            return []

        def reset(self) -> None:
            pass

    metrics = _state().metrics
    clock = VirtualClock()
    stages = [*fake_stages(Config(), render=False), Broken()]
    session = LiveSession(stages, clock, ServerConfig(jitter_ms=20), observer=metrics)
    session.start()
    await VirtualMic(session, clock, speech_like([(0.0, 0.5)], 0.5)).run(0.2)
    await session.finished.wait()
    await session.aclose()
    samples = parse(metrics.exposition().decode())
    assert value(samples, "msadtalker_errors_total", kind="pipeline") == 1


def test_every_app_has_its_own_registry() -> None:
    first, second = _state().metrics, _state().metrics
    first.auth_failures.labels(reason="bad_token").inc()
    assert first.registry is not second.registry
    assert (
        value(
            parse(first.exposition().decode()), "msadtalker_auth_failures_total", reason="bad_token"
        )
        == 1
    )
    assert ("msadtalker_auth_failures_total", frozenset({("reason", "bad_token")})) not in parse(
        second.exposition().decode()
    )


# ------------------------------------------------------------------ several workers, merged


async def test_one_exposition_for_all_workers_labels_every_sample() -> None:
    own, other = _state().metrics, _state().metrics
    own.frames_sent.labels(kind="video").inc(3)
    other.frames_sent.labels(kind="video").inc(5)
    other.render_seconds.observe(0.01)
    texts: dict[int, bytes | None] = {1: other.openmetrics(), 2: None, 3: b"garbage {"}

    async def fetch(worker: int) -> bytes | None:
        return texts[worker]

    text = (await cluster_exposition(own.openmetrics(), 0, 4, fetch)).decode()
    samples = parse(text)
    assert [value(samples, "msadtalker_worker_up", worker=str(i)) for i in range(4)] == [
        1,
        1,
        0,
        0,
    ]
    assert value(samples, "msadtalker_frames_sent_total", kind="video", worker="0") == 3
    assert value(samples, "msadtalker_frames_sent_total", kind="video", worker="1") == 5
    assert value(samples, "msadtalker_render_seconds_count", worker="1") == 1
    assert value(samples, "msadtalker_render_seconds_count", worker="0") == 0
    assert value(samples, "msadtalker_sessions", worker="1") == 0
    # Every sample says its worker, and each family is described once.
    assert all(dict(labels).get("worker") for _, labels in samples)
    helps = [line for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps))


# ------------------------------------------------------------------ a live server


@pytest.fixture
async def live() -> AsyncIterator[tuple[str, ServerState, aiohttp.ClientSession]]:
    config = Config(server=ServerConfig(jitter_ms=20))
    app = make_app(config, lambda: fake_stages(config))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield str(server.make_url("")).rstrip("/"), app[STATE], http
    finally:
        await server.close()


async def _scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return parse(await resp.text())


@pytest.mark.slow
async def test_metrics_of_a_live_room(
    live: tuple[str, ServerState, aiohttp.ClientSession],
) -> None:
    url, state, http = live
    publisher = LoopbackClient(url, speech_like([(0.2, 4.0)], 4.0), decode_video=False)
    viewer = LoopbackClient(url, role="viewer", decode_video=False)
    try:
        await publisher.connect(http)
        viewer.room = publisher.answer["room"]
        await viewer.connect(http)
        await eventually(lambda: len(viewer.video) >= 10, "10 frames at the viewer")
        during = await _scrape(http, url)
        assert value(during, "msadtalker_sessions") == 1
        assert value(during, "msadtalker_viewers") == 1
        assert value(during, "msadtalker_rooms") == 1
        assert value(during, "msadtalker_ready") == 1
        # Both peers' video tracks, and the publisher's audio track, hand frames on.
        sent_video = value(during, "msadtalker_frames_sent_total", kind="video")
        assert sent_video >= len(viewer.video) + 1
        assert value(during, "msadtalker_frames_sent_total", kind="audio") > 0
        assert value(during, "msadtalker_encode_seconds_count", kind="video") == sent_video
        assert value(during, "msadtalker_frames_published_total") >= 10
        assert value(during, "msadtalker_motion_step_seconds_count") >= 10
        ok = value(
            during,
            "msadtalker_http_responses_total",
            method="POST",
            route="/offer",
            status_class="2xx",
        )
        assert ok == 2

        async with http.post(
            f"{url}/offer", data=b"{", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
        async with http.get(f"{url}/no/such/page") as r:
            assert r.status == 404
        async with http.delete(f"{url}/sessions/{publisher.session_id}") as r:
            assert r.status == 200
        await eventually(lambda: not state.peers, "both peers closed")
        after = await _scrape(http, url)
    finally:
        await viewer.aclose()
        await publisher.aclose()
    assert value(after, "msadtalker_sessions") == value(after, "msadtalker_viewers") == 0
    assert value(after, "msadtalker_peers_closed_total", role="publisher", reason="hangup") == 1
    assert value(after, "msadtalker_peers_closed_total", role="viewer", reason="room_closed") == 1
    published = "msadtalker_frames_published_total"
    assert value(after, published) >= value(during, published)
    bad = value(
        after, "msadtalker_http_responses_total", method="POST", route="/offer", status_class="4xx"
    )
    assert bad == 1
    assert (
        value(
            after,
            "msadtalker_http_responses_total",
            method="GET",
            route="unmatched",
            status_class="4xx",
        )
        == 1
    )
    assert value(after, "msadtalker_errors_total", kind="http_4xx") == 2
    assert value(after, "process_resident_memory_bytes") > 0


# ------------------------------------------------------------------ serve --workers 2


class Workers:
    """``msadtalker --log-format json serve --workers 2 --port 0`` in a child process."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        argv = ["--log-format", "json", "-v", "serve", "--workers", "2", "--port", "0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if match is None:
            self.stop()
            raise AssertionError(f"serve did not start: {line!r}\n{self.log()}")
        self.url = match.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
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
        return self.proc.returncode


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    server = Workers(tmp_path / "serve.log")
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.slow
async def test_one_scrape_shows_both_workers(workers: Workers) -> None:
    clients: list[LoopbackClient] = []
    async with aiohttp.ClientSession() as http:
        try:
            for _ in range(2):  # placement puts them on different workers
                client = LoopbackClient(
                    workers.url,
                    speech_like([(0.2, 3.0)], 3.0),
                    decode_video=False,
                    keep_audio=False,
                )
                clients.append(client)
                await client.connect(http)
            owners = [parse_id(c.session_id).worker for c in clients]
            assert sorted(w for w in owners if w is not None) == [0, 1], owners
            await eventually(lambda: all(len(c.video) >= 5 for c in clients), "frames at both")
            for _ in range(4):  # whichever worker the connection lands on
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)
                ) as fresh:
                    samples = await _scrape(fresh, workers.url)
                for worker in ("0", "1"):
                    assert value(samples, "msadtalker_worker_up", worker=worker) == 1
                    assert value(samples, "msadtalker_sessions", worker=worker) == 1
                    sent = value(
                        samples, "msadtalker_frames_sent_total", kind="video", worker=worker
                    )
                    assert sent >= 5
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
    # The workers' logs: one JSON object per line, each saying which worker wrote it.
    lines = [json.loads(line) for line in workers.log().splitlines()]
    by_workers = [e for e in lines if "worker" in e]
    assert {e["worker"] for e in by_workers} == {0, 1}
    joined = [e for e in by_workers if "joined room" in e["message"]]
    assert {e["session_id"] for e in joined} == {c.session_id for c in clients}
