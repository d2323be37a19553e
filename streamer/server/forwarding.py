"""One of several workers (``msadtalker serve --workers N``): requests go to the worker that
owns what they are about, so that handlers never think about workers.

``forward_to_owner(cluster)`` is one middleware that decides, before any handler runs:

* a route with a ``{session_id}`` (``/sessions/{session_id}...``): the worker whose prefix the
  id carries (``Cluster.owner_of_session``);
* ``POST /whip/{room}`` and ``POST /whep/{room}`` (a ``{room}`` in the path): the room's
  owner (``Cluster.owner_of_room``), without reading the body;
* ``/rooms/{room}/outputs...`` (any method): the room's owner, where its outputs run;
* ``POST /offer`` (the route named ``"offer"``): the offer is read and checked here first (a
  bad offer is refused by the worker that received it); a named room's owner
  (``Cluster.owner_of_room``), else the least loaded worker that accepts sessions
  (``Forwarder.least_loaded``). While its worker is being chosen the offer counts in this
  worker's load (``ServerState.placing``), and once chosen, in the chosen worker's
  (``Forwarder.reserve`` .. ``release``), so that a burst of offers spreads. A draining
  worker places nothing: its handler refuses the offer (503);
* anything else, and every request that arrived on this worker's internal port (from another
  worker: no forwarding loops), is handled here.

A request for another worker is relayed to that worker's internal port and its answer
(status, JSON body) returned (``Forwarder.relay``), with the credential this worker
established for it (``streamer.server.access``, which runs first); a worker that does not
answer is a JSON 503 (``OwnerUnreachable``). ``worker_header`` stamps every answer with the
worker that received the request.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from streamer.server.access import CREDENTIAL, encode_credential
from streamer.server.cluster import WORKER_HEADER, Cluster, Forwarder
from streamer.server.handlers import read_offer
from streamer.server.offers import Offer
from streamer.server.state import STATE, ServerState

OFFER_ROUTE = "offer"  # the name of the ``POST /offer`` route in the route table
SESSION_ID = "session_id"  # the path variable of the session routes
ROOM = "room"  # the path variable of the routes about one room (``/whip/{room}``, ...)
ROOM_OUTPUTS = "/rooms/"  # ``/rooms/{room}/outputs...``: every method goes to the room's worker


def forward_to_owner(cluster: Cluster) -> Middleware:
    """The middleware that relays requests for other workers (see the module docstring)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if cluster.is_internal(request):
            return await handler(request)
        state = request.app[STATE]
        forwarder = state.forwarder
        assert forwarder is not None
        if request.match_info.route.name == OFFER_ROUTE:
            if state.draining:
                return await handler(request)
            return await _place_offer(request, handler, state, cluster, forwarder)
        room = request.match_info.get(ROOM)
        if room is not None and request.method == "POST" and not state.draining:
            owner = cluster.owner_of_room(room)
            if owner != cluster.index:
                forwarder.reserve(owner)
                try:
                    what = f"room {room!r}"
                    return await forwarder.relay(request, owner, what, _credential(request))
                finally:
                    forwarder.release(owner)
        if room is not None and request.path.startswith(ROOM_OUTPUTS):
            # A room's outputs are read and stopped where the room is (``server.outputs``).
            owner = cluster.owner_of_room(room)
            if owner != cluster.index:
                return await forwarder.relay(request, owner, f"room {room!r}", _credential(request))
        session_id = request.match_info.get(SESSION_ID)
        if session_id is not None:
            owner = cluster.owner_of_session(session_id)
            if owner != cluster.index:
                what = f"session {session_id!r}"
                return await forwarder.relay(request, owner, what, _credential(request))
        return await handler(request)

    return middleware


async def _place_offer(
    request: web.Request,
    handler: Handler,
    state: ServerState,
    cluster: Cluster,
    forwarder: Forwarder,
) -> web.StreamResponse:
    offer = await read_offer(request)
    state.placing += 1
    try:
        owner, what = await _offer_owner(state, cluster, forwarder, offer)
    finally:
        state.placing -= 1
    if owner == cluster.index:
        return await handler(request)
    forwarder.reserve(owner)  # before any await: the next placement sees it
    try:
        return await forwarder.relay(request, owner, what, _credential(request))
    finally:
        forwarder.release(owner)


async def _offer_owner(
    state: ServerState, cluster: Cluster, forwarder: Forwarder, offer: Offer
) -> tuple[int, str]:
    """The worker an offer belongs to: a named room's owner, else the least loaded worker."""
    if offer.room is not None:
        return cluster.owner_of_room(offer.room), f"room {offer.room!r}"

    def own_load() -> int | None:
        load = state.load - 1  # without this offer (counted in ``placing`` meanwhile)
        return load if load < state.server.max_sessions else None

    owner = await forwarder.least_loaded(own_load)
    return owner, "the new session"


def _credential(request: web.Request) -> str | None:
    """The caller's credential for the owner, which binds and checks against it (the hop
    itself is authenticated by ``Forwarder.relay``)."""
    credential = request.get(CREDENTIAL)
    return encode_credential(credential) if credential is not None else None


def worker_header(index: int) -> Middleware:
    """Every answer says which worker received the request (tests, debugging, a proxy's logs)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers[WORKER_HEADER] = str(index)
        return response

    return middleware
