"""Running the fuzz: each target is a Hypothesis search that records, for every case, what
the server did with it; nothing is asserted here (the tests assert, the bench reports).

Targets (``streamer.bench.fuzz_strategies`` makes the cases):

* ``parser``: ``parse_offer`` in this process on offer bodies around structured SDPs: an
  ``Offer`` or an ``OfferError`` with a 4xx, anything else is a crash (counted as a 5xx);
* ``offers``: the same bodies as ``POST /offer`` to a running server, i.e. the parser, then
  aiortc's ``setRemoteDescription``/``createAnswer``; every offer that is answered is hung up
  at once (``DELETE``), so the cases never fill the server's limits;
* ``routes``: any request to any route.

Requests are synchronous (``http.client``, a fresh connection each, from a loopback address
of its own: one client per case, so the per-client budgets do not turn the fuzz into 429s),
made in a thread while the event loop that owns the server (tests) or the streaming client
(the bench) runs on. Each outcome keeps its status, latency, whether an error body was the
JSON ``{"error", "status"}``, and whether a configured secret came back that the request did
not carry. Hypothesis steers towards slow answers (``target``) and writes no database.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import time
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings, target
from hypothesis import seed as hypothesis_seed
from hypothesis.strategies import SearchStrategy

from streamer.bench.fuzz_strategies import Credentials, HttpCase, http_requests, offer_bodies
from streamer.server.offers import OfferError, parse_offer

T = TypeVar("T")
REQUEST_TIMEOUT_S = 30.0  # a request that takes longer is recorded as a failure (status 0)
MAX_SDP_BYTES = 64_000  # ServerConfig's default, for the in-process parser target
KEPT = 5  # failing cases kept per kind, described in one line each


TIMED_OUT = 598  # no answer within REQUEST_TIMEOUT_S: a failure of the server's
CRASHED = 599  # the in-process parser raised something else than OfferError
UNANSWERED = 0  # the server closed the connection before an answer could be read


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int  # HTTP status, or TIMED_OUT, CRASHED, UNANSWERED
    latency_s: float
    json_error: bool = True  # an error answer with the JSON {"error", "status"} body
    # aiohttp's HTTP parser refused the request (an unknown method, a malformed line): its
    # own text/plain 400, answered before the application sees the request (a known gap).
    parser_refusal: bool = False
    leaked: bool = False  # a configured secret in the answer that the request did not carry
    hangup: int | None = None  # status of the DELETE after an answered offer
    note: str = ""  # the case, for a failure


@dataclass
class TargetFigures:
    """What a target did over its cases (``as_dict`` for the JSON)."""

    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    slowest: str = ""
    wall_s: float = 0.0  # the whole search: generating the cases and checking them
    _slowest_s: float = -1.0

    def add(self, outcome: Outcome, describe: Callable[[], str]) -> None:
        if outcome.latency_s > self._slowest_s:
            self._slowest_s = outcome.latency_s
            self.slowest = describe()
        self.outcomes.append(outcome)

    @property
    def server_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status >= 500]

    @property
    def non_json_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.json_error and not o.parser_refusal]

    @property
    def leaks(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.leaked]

    @property
    def failed_hangups(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.hangup is not None and not 200 <= o.hangup < 300]

    def as_dict(self) -> dict[str, Any]:
        latencies = sorted(o.latency_s * 1000.0 for o in self.outcomes)

        def quantile(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

        statuses = Counter(str(o.status) for o in self.outcomes)
        return {
            "cases": len(self.outcomes),
            "wall_s": round(self.wall_s, 1),
            "statuses": dict(sorted(statuses.items())),
            "server_errors": len(self.server_errors),
            "timeouts": sum(o.status == TIMED_OUT for o in self.outcomes),
            "non_json_errors": len(self.non_json_errors),
            "aiohttp_parser_400s": sum(o.parser_refusal for o in self.outcomes),
            "closed_before_answer": sum(o.status == UNANSWERED for o in self.outcomes),
            "secrets_echoed": len(self.leaks),
            "answered_offers_hung_up": sum(o.hangup is not None for o in self.outcomes),
            "failed_hangups": len(self.failed_hangups),
            "latency_ms_p50": quantile(0.5) if latencies else 0.0,
            "latency_ms_p99": quantile(0.99) if latencies else 0.0,
            "latency_ms_max": round(latencies[-1], 2) if latencies else 0.0,
            "slowest_case": self.slowest,
            "failing_cases": [
                o.note
                for o in (
                    self.server_errors + self.non_json_errors + self.leaks + self.failed_hangups
                )[:KEPT]
            ],
        }


def search(
    strategy: SearchStrategy[T],
    check: Callable[[T], Outcome],
    describe: Callable[[T], str],
    figures: TargetFigures,
    cases: int,
    seed: int,
) -> TargetFigures:
    """``check`` every case Hypothesis draws from ``strategy`` (``cases`` of them), into
    ``figures``; steered towards slow answers."""

    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=(Phase.generate, Phase.target),
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @hypothesis_seed(seed)
    @given(strategy)
    def run(case: T) -> None:
        outcome = check(case)
        figures.add(outcome, lambda: describe(case))
        target(outcome.latency_s, label="latency_s")

    with warnings.catch_warnings():
        # The event loop's thread (aiortc) draws from ``random`` while Hypothesis draws a
        # case in this one; Hypothesis takes that for a strategy using ``random``.
        warnings.filterwarnings("ignore", message="Do not use the `random` module")
        started = time.monotonic()
        run()
        figures.wall_s = time.monotonic() - started
    return figures


# ------------------------------------------------------------------ the parser, in process


def check_parser(body: bytes) -> Outcome:
    started = time.perf_counter()
    try:
        parse_offer(body, MAX_SDP_BYTES)
        status = 200
    except OfferError as exc:
        status = exc.status
        if "\n" in str(exc) or len(str(exc)) > 300:  # one short line naming the problem
            note = f"long message: {exc!s:.80}"
            return Outcome(CRASHED, time.perf_counter() - started, note=note)
    except Exception as exc:  # a crash of the parser: what the fuzz is for
        note = f"{type(exc).__name__}: {body[:120]!r}"
        return Outcome(CRASHED, time.perf_counter() - started, note=note)
    return Outcome(status, time.perf_counter() - started)


def fuzz_parser(cases: int, seed: int) -> TargetFigures:
    return search(
        offer_bodies(),
        check_parser,
        lambda body: f"{len(body)} B {body[:80]!r}",
        TargetFigures("parser"),
        cases,
        seed,
    )


# ------------------------------------------------------------------ over HTTP


class Sender:
    """Sends ``HttpCase``s to ``base_url``, each on a fresh connection from a loopback address
    of its own when the server is on loopback. ``secrets``: what no answer may carry."""

    def __init__(self, base_url: str, secrets: Sequence[str] = ()) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._loopback = self._host.startswith("127.")
        self._secrets = tuple(s for s in secrets if s)
        self._count = 0

    def next_source(self) -> tuple[str, int] | None:
        """A loopback address not used before (one client per case), or None (any)."""
        if not self._loopback:
            return None
        self._count += 1
        n = self._count
        return (f"127.{100 + (n // 62_500) % 100}.{(n // 250) % 250}.{1 + n % 250}", 0)

    def send(self, case: HttpCase, source: tuple[str, int] | None = None) -> Answer:
        """The server's answer to ``case``. A server that refuses a request early (a body
        too large, an unsupported ``Expect``) may answer and close while the body is still
        being sent: the answer is read all the same when it is there."""
        started = time.perf_counter()
        connection = http.client.HTTPConnection(
            self._host,
            self._port,
            timeout=REQUEST_TIMEOUT_S,
            source_address=source or self.next_source(),
        )
        status, payload, content_type, location = UNANSWERED, b"", "", ""
        try:
            connection.putrequest(case.method, case.path, skip_accept_encoding=True)
            for name, value in case.headers:
                connection.putheader(name, value)
            if case.body is not None:
                connection.putheader("Content-Length", str(len(case.body)))
            try:
                connection.endheaders(case.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while sending: an answer may have come first
            response = connection.getresponse()
            payload = response.read()
            status, content_type = response.status, response.getheader("Content-Type", "")
            location = response.getheader("Location", "") if status == 201 else ""
        except TimeoutError:
            status = TIMED_OUT
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        return Answer(status, payload, content_type, time.perf_counter() - started, location)

    def check(self, case: HttpCase) -> Outcome:
        """``case`` judged; a WHIP/WHEP session it made is ended at once (as an answered
        offer is): otherwise it would hold a slot until its connect timeout, and a run of
        them would fill the server (a 503 that is the server working as specified)."""
        source = self.next_source()
        answer = self.send(case, source)
        outcome = self.judge(case, answer)
        if not answer.location.startswith(("/whip/resource/", "/whep/resource/")):
            return outcome
        auth = tuple((k, v) for k, v in case.headers if k.lower() == "authorization")
        closed = self.send(HttpCase("DELETE", answer.location, auth, None), source).status
        ended = 200 <= closed < 300
        note = outcome.note or ("" if ended else f"DELETE {closed}: {case.describe()}")
        return dataclasses.replace(outcome, hangup=closed, note=note)

    def judge(self, case: HttpCase, answer: Answer) -> Outcome:
        status, payload = answer.status, answer.payload
        # HEAD answers have no body; a file's 416 (a Range it does not have) is aiohttp's
        # own, with an empty body, as HTTP has it.
        bodiless = case.method == "HEAD" or (status == 416 and not payload)
        json_error = status < 400 or bodiless or _is_json_error(payload, status)
        parser = status == 400 and answer.content_type.startswith("text/plain")
        sent = f"{case.path} {case.headers} {case.body!r}"
        leaked = any(s.encode() in payload and s not in sent for s in self._secrets)
        failed = status >= 500 or (not json_error and not parser) or leaked
        note = case.describe() if failed else ""
        return Outcome(status, answer.seconds, json_error, parser, leaked, note=note)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # or TIMED_OUT, UNANSWERED
    payload: bytes
    content_type: str
    seconds: float
    location: str = ""  # of a 201 (a WHIP/WHEP resource)


def _is_json_error(payload: bytes, status: int) -> bool:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and body.get("status") == status
    )


def fuzz_routes(
    sender: Sender, strategy: SearchStrategy[HttpCase], cases: int, seed: int
) -> TargetFigures:
    return search(strategy, sender.check, HttpCase.describe, TargetFigures("routes"), cases, seed)


def fuzz_routes_of(
    sender: Sender,
    credentials: Credentials,
    ids: Sequence[str],
    rooms: Sequence[str],
    cases: int,
    seed: int,
) -> TargetFigures:
    """``fuzz_routes`` with ``http_requests(credentials, ids, rooms)``: what another process
    can be asked to run (a strategy does not pickle)."""
    return fuzz_routes(sender, http_requests(credentials, ids, rooms), cases, seed)


def fuzz_offers(
    sender: Sender, authorization: str, rooms: Sequence[str], cases: int, seed: int
) -> TargetFigures:
    """Offer bodies as ``POST /offer`` with ``authorization`` (a publisher's); an answered
    offer is hung up at once, its DELETE's status kept."""
    headers = (("Content-Type", "application/json"), ("Authorization", authorization))

    def check(body: bytes) -> Outcome:
        case = HttpCase("POST", "/offer", headers, body)
        source = sender.next_source()
        answer = sender.send(case, source)
        outcome = sender.judge(case, answer)
        if answer.status != 200:
            return outcome
        try:
            session_id = str(json.loads(answer.payload)["session_id"])
        except (ValueError, KeyError, TypeError):
            note = f"an answer without a session id: {answer.payload[:80]!r}"
            return Outcome(CRASHED, answer.seconds, note=note)
        path = f"/sessions/{urllib.parse.quote(session_id)}"
        closed = sender.send(HttpCase("DELETE", path, headers[1:], None), source).status
        note = "" if closed == 200 else f"hang-up {closed}: {case.describe()}"
        return dataclasses.replace(outcome, hangup=closed, note=note)

    return search(
        offer_bodies(rooms),
        check,
        lambda body: f"{len(body)} B {body[:80]!r}",
        TargetFigures("offers"),
        cases,
        seed,
    )
