"""Several server processes behind one port: who owns an id, and how a request reaches its owner.

With ``msadtalker serve --workers N`` every worker is a full server (event loop, peer
connections, ICE sockets, sessions) listening on the shared public port (SO_REUSEPORT: the
kernel hands each new TCP connection to one of them) and on an internal loopback port of its
own. A session or room lives in exactly one worker, its owner:

* ids made by worker ``i`` carry ``w{i}-`` after their instance (sessions
  ``i-host_w1-3f2a...``, rooms ``i-host_w1-Xy_9ab``; ``streamer.server.ids``);
* a room id a client chose without such a prefix is owned by ``crc32(id) % N``, so a second
  publisher for the same name meets the first one (409) whichever worker it reached;
* a publisher offer without a room goes to the least loaded worker that accepts sessions
  (ties: the one that received it), because the kernel spreads connections, not sessions, and
  a client's keep-alive connection would pin all its offers to one worker.

A worker that receives a request for an id it does not own forwards it to the owner's internal
port and relays the answer (status + JSON body). Requests that arrive on the internal port are
always handled where they arrive (no forwarding loops). Media is never forwarded: the answer's
ICE candidates are the owner's own UDP sockets.

The internal ports are on loopback, where any local user could reach them, so the hop is
authenticated: the supervisor hands every worker one random secret per run through the
environment (``HOP_SECRET_ENV``, read once and removed: never on a command line, which other
users can read); every forwarded request carries it (``HOP_HEADER``, compared in constant
time) with the credential the receiving worker established (``CREDENTIAL_HEADER``,
``streamer.server.access``), and a request on an internal port without it is refused (403).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from msadtalker.errors import ConfigError
from streamer.server.clients import CLIENT
from streamer.server.ids import parse_id

log = logging.getLogger(__name__)

WORKER_HEADER = "X-Msadtalker-Worker"  # on every worker's answer: the worker that received it
HOP_HEADER = "X-Msadtalker-Hop"  # the run's hop secret, on every request between workers
CREDENTIAL_HEADER = "X-Msadtalker-Credential"  # who the forwarded request's caller proved to be
HOP_SECRET_ENV = "MSADTALKER_HOP_SECRET"  # how the supervisor hands the secret to its workers
# Every value of each (a WHIP/WHEP answer has one ``Link`` per ICE server URL).
_RELAYED_HEADERS = (
    "Content-Type",
    "Retry-After",
    "Allow",
    "Location",
    "ETag",
    "Link",
    "Cache-Control",
)
PLACEMENT_TIMEOUT_S = 1.0  # a worker that does not say its load by then is left out
REQUEST_TIMEOUT_S = 10.0  # forwarded requests other than offers
OFFER_ROUTES = frozenset({"offer", "whip", "whep"})  # names of the routes that negotiate


class OwnerUnreachable(Exception):
    """The owning worker did not answer (it died, or is stuck)."""

    def __init__(self, owner: int, what: str) -> None:
        super().__init__(f"worker {owner}, which owns {what}, is not answering")


def take_hop_secret() -> str:
    """The hop secret the supervisor put in this worker's environment, removed from it (no
    child process inherits it); ``ConfigError`` when there is none."""
    secret = os.environ.pop(HOP_SECRET_ENV, "")
    if not secret:
        raise ConfigError(f"--worker needs {HOP_SECRET_ENV} (it is set by `serve --workers`)")
    return secret


@dataclass(frozen=True)
class Cluster:
    """This worker's place among the workers: ``index``, every worker's internal port and the
    run's ``hop_secret`` (see the module docstring; never shown in ``repr``)."""

    index: int
    internal_ports: tuple[int, ...]
    hop_secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.internal_ports):
            raise ValueError(f"worker index {self.index} outside 0..{len(self) - 1}")
        if not self.hop_secret:
            raise ValueError("workers need a hop secret")

    def hop_ok(self, presented: str | None) -> bool:
        """Whether a request on the internal port carries this run's hop secret."""
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.hop_secret.encode())

    def __len__(self) -> int:
        return len(self.internal_ports)

    @property
    def internal_port(self) -> int:
        return self.internal_ports[self.index]

    def others(self) -> list[int]:
        return [i for i in range(len(self)) if i != self.index]

    def owner_of_session(self, session_id: str) -> int:
        """The worker whose prefix the id carries; an id without one is nobody's (handled
        here, where it is unknown: 404)."""
        owner = self._prefixed(session_id)
        return self.index if owner is None else owner

    def owner_of_room(self, room_id: str) -> int:
        owner = self._prefixed(room_id)
        if owner is not None:
            return owner
        return zlib.crc32(room_id.encode("utf-8")) % len(self)

    def _prefixed(self, some_id: str) -> int | None:
        worker = parse_id(some_id).worker
        if worker is None or worker >= len(self):
            return None
        return worker

    def is_internal(self, request: web.Request) -> bool:
        """Whether ``request`` came in on this worker's internal port (from another worker)."""
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return (
            isinstance(sockname, tuple)
            and len(sockname) >= 2
            and sockname[1] == (self.internal_port)
        )


@dataclass
class Forwarder:
    """Relays requests to other workers' internal ports; one HTTP client per worker process,
    opened on first use, closed by ``aclose``."""

    cluster: Cluster
    offer_timeout_s: float
    _http: aiohttp.ClientSession | None = None
    # Offers on their way to each worker (``reserve`` .. ``release``): added to the load a
    # worker reports, so that a burst of offers that all see the same reported loads still
    # spreads.
    _in_flight: dict[int, int] = field(default_factory=dict)
    # Placements are decided one at a time per worker: each sees the previous one's outcome.
    _placing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            # No pooled connection outlives a dead worker for long; loopback is cheap.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=5.0)
            self._http = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._http

    def _url(self, owner: int, path_qs: str) -> str:
        return f"http://127.0.0.1:{self.cluster.internal_ports[owner]}{path_qs}"

    async def relay(
        self, request: web.Request, owner: int, what: str, credential: str | None = None
    ) -> web.Response:
        """Send ``request`` (method, path, query, body) to worker ``owner``; its answer.
        ``credential``: the caller's, as established here (``CREDENTIAL_HEADER``); the
        caller's own ``Authorization`` is not passed on."""
        # Read already (and cached) by the handler that decided to forward it.
        body = await request.read() if request.body_exists else None
        headers = {
            "Content-Type": request.headers.get("Content-Type", "application/json"),
            HOP_HEADER: self.cluster.hop_secret,
        }
        if credential is not None:
            headers[CREDENTIAL_HEADER] = credential
        client = request.get(CLIENT) or request.remote  # as ``limits`` named it
        if client:
            headers["X-Forwarded-For"] = client
        is_offer = request.method == "POST" and request.match_info.route.name in OFFER_ROUTES
        timeout = aiohttp.ClientTimeout(
            total=self.offer_timeout_s if is_offer else REQUEST_TIMEOUT_S
        )
        try:
            async with self._client().request(
                request.method,
                self._url(owner, request.path_qs),
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                relayed: CIMultiDict[str] = CIMultiDict()
                for name in _RELAYED_HEADERS:
                    for value in resp.headers.getall(name, ()):
                        relayed.add(name, value)
                return web.Response(body=payload, status=resp.status, headers=relayed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "forwarding %s %s to worker %d failed: %r", request.method, request.path, owner, exc
            )
            raise OwnerUnreachable(owner, what) from None

    def reserve(self, owner: int) -> None:
        """Count an offer this worker is about to forward to ``owner`` in its load."""
        self._in_flight[owner] = self._in_flight.get(owner, 0) + 1

    def release(self, owner: int) -> None:
        self._in_flight[owner] -= 1

    async def least_loaded(self, own_load: Callable[[], int | None]) -> int:
        """The worker a new publisher should go to: the lowest load (peers + offers being
        negotiated or placed, + offers this worker is forwarding there) among the workers
        accepting sessions; ``own_load()`` is this worker's without the offer being placed
        (``None``: it accepts none), read once the others have answered. Ties stay here.
        The caller ``reserve``s the chosen worker before the next placement runs."""
        async with self._placing:
            return await self._least_loaded(own_load)

    async def _least_loaded(self, own_load: Callable[[], int | None]) -> int:
        others = self.cluster.others()
        reported = await asyncio.gather(*(self._load_of(j) for j in others))
        mine = own_load()
        best_load, best = (mine, self.cluster.index) if mine is not None else (None, -1)
        for j, load in zip(others, reported, strict=True):
            if load is None:
                continue
            load += self._in_flight.get(j, 0)
            if best_load is None or load < best_load:
                best_load, best = load, j
        chosen = self.cluster.index if best < 0 else best
        log.debug("placement: own load %s, others %s -> worker %d", mine, reported, chosen)
        return chosen

    async def get(
        self, worker: int, path: str, timeout_s: float, credential: str | None = None
    ) -> tuple[int, bytes] | None:
        """``GET path`` on worker ``worker``'s internal port, with the hop secret (and the
        ``credential`` a route needs): (status, body), ``None`` when it does not answer."""
        headers = {HOP_HEADER: self.cluster.hop_secret}
        if credential is not None:
            headers[CREDENTIAL_HEADER] = credential
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            url = self._url(worker, path)
            async with self._client().get(url, timeout=timeout, headers=headers) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def fetch(self, worker: int, path: str, timeout_s: float) -> bytes | None:
        """The body of worker ``worker``'s 200 answer to ``GET path`` (``None``: no 200)."""
        answer = await self.get(worker, path, timeout_s)
        return answer[1] if answer is not None and answer[0] == 200 else None

    async def _load_of(self, worker: int) -> int | None:
        """A worker's load from its ``/readyz``; ``None`` when it is full, draining or silent."""
        answer = await self.get(worker, "/readyz", PLACEMENT_TIMEOUT_S)
        if answer is None or answer[0] != 200:
            return None
        try:
            body: dict[str, Any] = json.loads(answer[1])
        except ValueError:
            return None
        load = body.get("load") if isinstance(body, dict) else None
        return load if isinstance(load, int) else None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
