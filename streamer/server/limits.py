"""What one client, and all of them together, may ask of a server (``ServerConfig``).

* ``limit_offers``: the middleware that names each request's client (``clients``) and spends
  one of its offer budget per ``POST /offer``, ``/whip/{room}`` or ``/whep/{room}``
  (``offers_per_minute``, ``offers_burst``), before anything is read or authenticated, so a
  flood costs a dict lookup per request.
* ``admit_offer``: offers not connected yet (being negotiated, or answered and waiting for
  ICE) per client (``max_pending_per_client``) and in all (``max_pending``); they are closed
  ``connect_timeout_s`` after their answer (``peers``).
* ``check_capacity``: sessions (``max_sessions``), rooms (``max_rooms``), viewers per room
  and in all (``max_viewers_per_room``, ``max_viewers``).

What the two refusals mean (docs/live.md, "Limits"):

* **429** Too Many Requests: *this client* is over its own budget (offers a minute, offers
  still connecting, connections at once); others are served. ``Retry-After``: when its
  budget allows the next one.
* **503** Service Unavailable: the server, or the room, is at capacity for everyone (or is
  shutting down); ``Retry-After`` says when to try again.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from streamer.server.clients import CLIENT, UNKNOWN, client_address
from streamer.server.cluster import Cluster
from streamer.server.errors import RequestError
from streamer.server.offers import Offer
from streamer.server.rooms import Room
from streamer.server.state import STATE, Peer, ServerState

CAPACITY_RETRY_S = 5  # a session slot frees up when anyone leaves: ask again soon


def limit_offers(offer_routes: Collection[str], cluster: Cluster | None = None) -> Middleware:
    """Names the client of every request (``clients.CLIENT``) and keeps each client to its
    offer budget (429). Requests from another worker were counted where they came in."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.app[STATE]
        internal = cluster is not None and cluster.is_internal(request)
        client = client_address(request, state.clients, internal)
        request[CLIENT] = client
        if not internal and request.match_info.route.name in offer_routes:
            wait = state.clients.offers.take(client)
            if wait is not None:
                raise RequestError(
                    429,
                    f"too many offers from this address (at most {state.server.offers_burst} "
                    f"at once, {state.server.offers_per_minute:g} a minute); try again later",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return await handler(request)

    return middleware


def client_of(request: web.Request) -> str:
    return request.get(CLIENT) or request.remote or UNKNOWN


def pending(state: ServerState, client: str | None = None) -> int:
    """Offers not connected yet, ``client``'s or everyone's."""
    if client is None:
        negotiating = state.negotiating
    else:
        negotiating = state.clients.negotiating.get(client, 0)
    waiting = sum(
        1
        for p in state.peers.values()
        if p.pc is not None and not p.connected and (client is None or p.client == client)
    )
    return negotiating + waiting


def admit_offer(state: ServerState, client: str) -> None:
    """429 when ``client`` has too many offers still connecting, 503 when everyone has."""
    server = state.server
    retry = {"Retry-After": str(max(1, math.ceil(server.connect_timeout_s)))}
    if pending(state, client) >= server.max_pending_per_client:
        raise RequestError(
            429,
            f"this address has {server.max_pending_per_client} offers still connecting; "
            "connect them or wait",
            retry,
        )
    if pending(state) >= server.max_pending:
        raise RequestError(503, "too many sessions are connecting right now; try again", retry)


def check_capacity(state: ServerState, offer: Offer, room: Room[Peer] | None) -> None:
    """503 + ``Retry-After`` when the server or ``room`` (a viewer's) is full."""
    server = state.server
    retry = {"Retry-After": str(CAPACITY_RETRY_S)}
    if state.full:
        raise RequestError(503, "server is at its session limit; try again later", retry)
    if offer.role == "publisher":
        if len(state.rooms) >= server.max_rooms:
            raise RequestError(503, "server is at its room limit; try again later", retry)
        return
    if room is not None and len(room.viewers) >= server.max_viewers_per_room:
        raise RequestError(503, "room is at its viewer limit; try again later", retry)
    viewers = sum(1 for p in state.peers.values() if p.role == "viewer")
    if viewers >= server.max_viewers:
        raise RequestError(503, "server is at its viewer limit; try again later", retry)
