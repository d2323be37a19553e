"""Prometheus metrics of one server process, and the one scrape of ``serve --workers N``.

Two kinds of figures, chosen by where the value already is:

* read at scrape time by a collector (no cost on the hot path): sessions, viewers, rooms,
  offers in negotiation, readiness, and the session counters the drop policy keeps anyway
  (``SessionStats``, the fan-out's drops, the jitter buffer's late/missing samples). A
  session's counts move into running totals when it closes (``closed``), so the counters
  never go backwards;
* observed where the event happens: motion-step, render and track (encode) times, queue
  depths, frames sent, HTTP answers, errors, auth failures, peers closed by reason.

Everything hangs off one ``CollectorRegistry`` per ``ServerMetrics`` (one per app), so
several apps in one process (tests) share nothing. ``ServerMetrics`` is the sessions'
``SessionObserver`` and the tracks' ``TrackObserver``.

With ``serve --workers N`` the worker a scrape reaches asks the others over their internal
ports (OpenMetrics text, parsed back), adds a ``worker`` label to every sample, its own
included, and answers one exposition: ``msadtalker_worker_up{worker}`` says who answered.
(prometheus-client's multiprocess mode cannot aggregate custom collectors, and gauges read
from live state are what most of this is.)

Other modules count with the public metric objects, e.g.
``metrics.auth_failures.labels(reason="bad_token").inc()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest as text_exposition
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from streamer.server.state import ServerState
    from streamer.session import LiveSession

PREFIX = "msadtalker"
WORKER_SCRAPE_TIMEOUT_S = 2.0  # a worker that has not answered by then shows worker_up 0
CONTENT_TYPE = CONTENT_TYPE_LATEST  # the classic text format every Prometheus reads
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"  # between workers
# Drop-policy reasons of ``msadtalker_frames_dropped_total`` (see ``streamer.session``).
DROP_REASONS = ("render_busy", "render_late", "subscriber_queue_full", "interrupt_purge")
_METHODS = frozenset({"GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"})
_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.5)
_RENDER = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 5.0, 10.0)
_ENCODE = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04)
_QUEUE = (0, 1, 2, 3, 4, 6, 8, 16)
_INGEST = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


@dataclass
class _Totals:
    """Counts of the sessions that have closed (mutable running sums, this module's own)."""

    published: int = 0
    rendered: int = 0
    render_busy: int = 0
    render_late: int = 0
    subscriber_drops: int = 0
    purged: int = 0
    late_ticks: int = 0
    interrupts: int = 0
    samples_in: int = 0
    samples_late: int = 0
    samples_missing: int = 0
    samples_skipped: int = 0

    def add(self, session: LiveSession) -> None:
        stats, ingest = session.stats, session.ingest.stats
        self.published += stats.frames_out
        self.rendered += stats.frames_rendered
        self.render_busy += stats.renders_skipped - stats.renders_late
        self.render_late += stats.renders_late
        self.subscriber_drops += session.fanout.dropped
        self.purged += stats.purged_on_interrupt
        self.late_ticks += stats.late_ticks
        self.interrupts += stats.interrupts
        self.samples_in += ingest.samples_in
        self.samples_late += ingest.samples_late
        self.samples_missing += ingest.samples_missing
        self.samples_skipped += ingest.samples_skipped


class ServerMetrics:
    """One process's metrics (see the module docstring); ``state`` is read at scrape time."""

    def __init__(self, state: ServerState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._state = state
        self._live: dict[int, LiveSession] = {}  # id(session) -> open session
        self._closed = _Totals()
        registry = self.registry
        self.motion_step_seconds = Histogram(
            f"{PREFIX}_motion_step_seconds",
            "Wall time of one tick's motion stages (features, lips, silence, motion).",
            buckets=_FAST,
            registry=registry,
        )
        self.render_seconds = Histogram(
            f"{PREFIX}_render_seconds",
            "Wall time of one frame's render (on the session's or the render thread).",
            buckets=_RENDER,
            registry=registry,
        )
        self.encode_seconds = Histogram(
            f"{PREFIX}_encode_seconds",
            "Time an output track spends preparing one frame (video: colour conversion to "
            "I420; audio: resampling and Opus encoding). aiortc's VP8/H264 encoder is not "
            "included.",
            ["kind"],
            buckets=_ENCODE,
            registry=registry,
        )
        self.output_queue_frames = Histogram(
            f"{PREFIX}_output_queue_frames",
            "Frames still queued for a track when it takes one (drop-oldest beyond "
            "server.queue_frames).",
            ["kind"],
            buckets=_QUEUE,
            registry=registry,
        )
        self.ingest_buffered_seconds = Histogram(
            f"{PREFIX}_ingest_buffered_seconds",
            "Mic audio waiting in a session's jitter buffer when a tick takes its frame.",
            buckets=_INGEST,
            registry=registry,
        )
        self.frames_sent = Counter(
            f"{PREFIX}_frames_sent",
            "Frames handed to the WebRTC senders (per track kind; viewers' tracks included).",
            ["kind"],
            registry=registry,
        )
        self.http_responses = Counter(
            f"{PREFIX}_http_responses",
            "HTTP answers by route and status class (requests between workers not counted).",
            ["method", "route", "status_class"],
            registry=registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Errors by kind: http_4xx, http_5xx, negotiation (an offer that could not be "
            "answered), pipeline (a session's pipeline raised).",
            ["kind"],
            registry=registry,
        )
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures",
            "Requests refused for their credentials, by reason.",
            ["reason"],
            registry=registry,
        )
        self.peers_closed = Counter(
            f"{PREFIX}_peers_closed",
            "Peer connections closed, by role and why.",
            ["role", "reason"],
            registry=registry,
        )
        self.wish_sessions = Counter(
            f"{PREFIX}_wish_sessions",
            "Sessions opened over WHIP (publishers) and WHEP (viewers), by protocol.",
            ["protocol"],
            registry=registry,
        )
        self.ice_servers_handed = Counter(
            f"{PREFIX}_ice_servers_handed",
            "ICE server lists (with TURN credentials when configured) handed out, by route "
            "(the WHIP/WHEP answers' Link headers are not counted here).",
            ["route"],
            registry=registry,
        )
        registry.register(_LiveCollector(self))
        ProcessCollector(registry=registry)

    # ------------------------------------------------------------ SessionObserver

    def opened(self, session: LiveSession) -> None:
        self._live[id(session)] = session

    def closed(self, session: LiveSession) -> None:
        """The session's counts join the totals (once: a second call finds it gone)."""
        if self._live.pop(id(session), None) is not None:
            self._closed.add(session)

    def motion_step(self, seconds: float, ingest_buffered_s: float) -> None:
        self.motion_step_seconds.observe(seconds)
        self.ingest_buffered_seconds.observe(ingest_buffered_s)

    def rendered(self, seconds: float) -> None:
        self.render_seconds.observe(seconds)

    def pipeline_failed(self) -> None:
        self.errors.labels(kind="pipeline").inc()

    # ------------------------------------------------------------ TrackObserver

    def frame_sent(self, kind: str, encode_s: float, queued: int) -> None:
        self.frames_sent.labels(kind=kind).inc()
        self.encode_seconds.labels(kind=kind).observe(encode_s)
        self.output_queue_frames.labels(kind=kind).observe(queued)

    # ------------------------------------------------------------ HTTP

    def answered(self, method: str, route: str, status: int) -> None:
        """One HTTP answer (``route``: the route's pattern, never the raw path)."""
        shown = method if method in _METHODS else "other"
        status_class = f"{status // 100}xx"
        self.http_responses.labels(method=shown, route=route, status_class=status_class).inc()
        if status >= 400:
            self.errors.labels(kind=f"http_{status_class}").inc()

    # ------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        """This process's metrics, Prometheus text format."""
        return text_exposition(self.registry)

    def openmetrics(self) -> bytes:
        """This process's metrics as OpenMetrics text (what workers send one another)."""
        return openmetrics_exposition(self.registry)

    def _session_families(self) -> Iterator[Metric]:
        totals = _Totals(**vars(self._closed))
        for session in self._live.values():
            totals.add(session)
        yield _counter("frames_published", "Frames the sessions published.", totals.published)
        yield _counter("frames_rendered", "Pictures the renderers made.", totals.rendered)
        dropped = CounterMetricFamily(
            f"{PREFIX}_frames_dropped",
            "Frames dropped by the declared drop policy (docs/live.md): render_busy / "
            "render_late = published with the last picture instead of their own; "
            "subscriber_queue_full = dropped from one track's queue; interrupt_purge = "
            "queued or being made when a barge-in came.",
            labels=["reason"],
        )
        values = (totals.render_busy, totals.render_late, totals.subscriber_drops, totals.purged)
        for reason, value in zip(DROP_REASONS, values, strict=True):
            dropped.add_metric([reason], value)
        yield dropped
        yield _counter("late_ticks", "Ticks that started after their deadline.", totals.late_ticks)
        yield _counter("interrupts", "Barge-ins.", totals.interrupts)
        samples = CounterMetricFamily(
            f"{PREFIX}_ingest_samples",
            "Mic samples (16 kHz): received; late (arrived after their frame, discarded); "
            "missing (not there in time, zeros fed); skipped (delay shed).",
            labels=["outcome"],
        )
        for outcome, value in (
            ("received", totals.samples_in),
            ("late", totals.samples_late),
            ("missing", totals.samples_missing),
            ("skipped", totals.samples_skipped),
        ):
            samples.add_metric([outcome], value)
        yield samples

    def _state_families(self) -> Iterator[Metric]:
        state = self._state
        peers = list(state.peers.values())
        publishers = sum(1 for p in peers if p.role == "publisher")
        ready, _ = state.readiness()
        yield _gauge("sessions", "Publisher sessions (rooms being published).", publishers)
        yield _gauge("viewers", "Viewer peer connections.", len(peers) - publishers)
        yield _gauge("rooms", "Open rooms.", len(state.rooms))
        yield _gauge(
            "offers_in_progress",
            "Offers being negotiated or placed on a worker.",
            state.negotiating + state.placing,
        )
        yield _gauge("session_capacity", "server.max_sessions.", state.server.max_sessions)
        yield _gauge("ready", "1 while new sessions are accepted (/readyz).", int(ready))
        yield _gauge("draining", "1 once shutdown has begun.", int(state.draining))


class _LiveCollector(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        yield from self._metrics._state_families()
        yield from self._metrics._session_families()


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


# ------------------------------------------------------------------ several workers

Fetch = Callable[[int], Awaitable[bytes | None]]


async def cluster_exposition(own: bytes, own_index: int, workers: int, fetch: Fetch) -> bytes:
    """One Prometheus text exposition for all workers: ``own`` (this worker's OpenMetrics
    text) and what ``fetch(i)`` returns for every other worker ``i`` (``None``: it did not
    answer), each sample labelled with its ``worker``."""
    others = [i for i in range(workers) if i != own_index]
    fetched = await asyncio.gather(*(fetch(i) for i in others))
    texts = {own_index: own, **dict(zip(others, fetched, strict=True))}
    merged: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        f"{PREFIX}_worker_up", "1 when the worker answered this scrape.", labels=["worker"]
    )
    for index in range(workers):
        text = texts.get(index)
        families = _parse(text) if text is not None else None
        up.add_metric([str(index)], 0 if families is None else 1)
        for family in families or ():
            _merge(merged, family, str(index))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([up, *merged.values()]))
    return text_exposition(registry)


def _parse(text: bytes) -> list[Metric] | None:
    try:
        return list(text_string_to_metric_families(text.decode("utf-8")))
    except (ValueError, UnicodeDecodeError):
        return None  # a worker that answers garbage counts as not answering


def _merge(merged: dict[str, Metric], family: Metric, worker: str) -> None:
    into = merged.get(family.name)
    if into is None:
        into = Metric(family.name, family.documentation, family.type, family.unit)
        merged[family.name] = into
    for sample in family.samples:
        labels = {**sample.labels, "worker": worker}
        into.samples.append(Sample(sample.name, labels, sample.value, sample.timestamp))


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


# ------------------------------------------------------------------ HTTP answers


def count_answers(
    metrics: ServerMetrics, is_internal: Callable[[web.Request], bool] | None = None
) -> Middleware:
    """The outermost middleware: every answer by method, route pattern and status class
    (``is_internal``: requests from another worker, counted where they were received)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_internal is not None and is_internal(request):
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.answered(request.method, route, exc.status)
            raise
        except Exception:
            metrics.answered(request.method, route, 500)
            raise
        metrics.answered(request.method, route, response.status)
        return response

    return middleware
