"""The request handlers (the route table is in ``streamer.server.app``).

Each handler answers for this process alone: requests that belong to another worker never
reach it (``streamer.server.forwarding``). Refusals are raised (``RequestError``,
``OfferError``) and become JSON errors in ``streamer.server.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from streamer.server.access import authorized_offer, credential_of, may_access, viewer_link
from streamer.server.errors import RequestError
from streamer.server.limits import admit_offer, check_capacity, client_of
from streamer.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streamer.server.metrics import OPENMETRICS, WORKER_SCRAPE_TIMEOUT_S, cluster_exposition
from streamer.server.offers import Offer, OfferError, max_body_bytes, parse_offer
from streamer.server.peers import close_peer, media_clocks, negotiate
from streamer.server.poster import poster_jpeg
from streamer.server.rooms import Room
from streamer.server.state import STATE, Peer, ServerState

log = logging.getLogger(__name__)

OFFER = web.RequestKey("offer", Offer)  # the request's offer, once read (``read_offer``)
RETRY_LATER = {"Retry-After": "5"}
READY_REASONS = {"draining": "the server is shutting down", "full": "at the session limit"}


async def read_offer(request: web.Request) -> Offer:
    """The checked offer in the request body, as the caller's credential may make it
    (``access.authorize_offer``); read once (the forwarding middleware may have read it
    already, to decide where it goes)."""
    cached = request.get(OFFER)
    if cached is not None:
        return cached
    credential_of(request)  # 401 before anything is read
    max_sdp = request.app[STATE].server.max_sdp_bytes
    length = request.content_length
    if length is not None and length > max_body_bytes(max_sdp):
        raise OfferError(413, "request body too large")  # refused unread
    if request.content_type != "application/json":
        # A web page may send text/plain to any site without asking (no CORS preflight):
        # requiring JSON keeps other sites' pages from opening sessions from their visitors.
        raise OfferError(415, "Content-Type must be application/json")
    try:
        body = await request.read()
    except web.RequestPayloadError:  # a body aiohttp could not decode (chunks, compression)
        raise OfferError(400, "request body could not be read") from None
    offer = authorized_offer(request, parse_offer(body, max_sdp))
    request[OFFER] = offer
    return offer


async def answer_offer(
    request: web.Request, read: Callable[[web.Request], Awaitable[Offer]]
) -> tuple[Offer, dict[str, Any]]:
    """The path every offer takes (``POST /offer``, WHIP, WHEP): admitted before its body is
    read (``read`` parses it), its room found, capacity checked, negotiated."""
    state = request.app[STATE]
    if state.draining:
        raise RequestError(503, "server is shutting down")
    client = client_of(request)
    admit_offer(state, client)  # offers still connecting: before the body is read
    offer = await read(request)
    room: Room[Peer] | None = None
    if offer.role == "viewer":
        assert offer.room is not None  # a viewer offer names its room
        room = state.rooms.get(offer.room)
        if room is None or room.publisher is None:
            raise RequestError(404, f"no room {offer.room!r} with a publisher")
    check_capacity(state, offer, room)
    state.negotiating += 1
    try:
        with state.clients.negotiation(client):
            subject = credential_of(request).subject
            answer = await negotiate(state, offer, room, subject, client=client)
    finally:
        state.negotiating -= 1
    return offer, answer


async def handle_offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    offer, answer = await answer_offer(request, read_offer)
    if offer.role == "publisher":
        answer["viewer_url"] = viewer_link(state, answer["room"])
    return web.json_response(answer)


def _figures(state: ServerState) -> dict[str, Any]:
    ready, reason = state.readiness()
    body: dict[str, Any] = {
        "ready": ready,
        "reason": reason,
        "sessions": len(state.peers),
        "rooms": len(state.rooms),
        "capacity": state.server.max_sessions,
    }
    if state.cluster is not None:
        # This worker's alone (a load balancer sees N independent processes on one port).
        body.update(worker=state.cluster.index, workers=len(state.cluster), load=state.load)
    return body


async def handle_health(request: web.Request) -> web.Response:
    """Liveness: 200 whenever the process answers, busy, full or draining alike (restarting
    a server because it is full would only cut its sessions); the figures say the rest."""
    return web.json_response({"alive": True, **_figures(request.app[STATE])})


async def handle_ready(request: web.Request) -> web.Response:
    """Readiness for a new session: 200, or 503 with the reason ("draining", "full")."""
    body = _figures(request.app[STATE])
    if body["ready"]:
        return web.json_response(body)
    reason = READY_REASONS.get(body["reason"], body["reason"])
    body.update(error=f"not ready: {reason}", status=503)
    return web.json_response(body, status=503, headers=RETRY_LATER)


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (``streamer.server.metrics``); with several workers, all of them
    (a request from another worker gets this worker's alone, as OpenMetrics text)."""
    state = request.app[STATE]
    metrics, cluster, forwarder = state.metrics, state.cluster, state.forwarder
    if cluster is None or forwarder is None:
        body = metrics.exposition()
    elif cluster.is_internal(request):
        return web.Response(body=metrics.openmetrics(), headers={"Content-Type": OPENMETRICS})
    else:

        async def fetch(worker: int) -> bytes | None:
            answer = await forwarder.get(worker, "/metrics", WORKER_SCRAPE_TIMEOUT_S)
            return answer[1] if answer is not None and answer[0] == 200 else None

        body = await cluster_exposition(metrics.openmetrics(), cluster.index, len(cluster), fetch)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def handle_poster(request: web.Request) -> web.Response:
    """The avatar at rest as a JPEG (``streamer.server.poster``)."""
    try:
        jpeg = await poster_jpeg(request.app[STATE])
    except Exception:
        log.exception("rendering the avatar poster failed")
        raise RequestError(404, "the avatar picture is not available") from None
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})


def _peer(request: web.Request) -> Peer:
    """The session the path names, if the caller created it: to anyone else it does not
    exist (the same 404 as an unknown id, so ids cannot be probed). One the server ended a
    short while ago is a 410 naming why, to its creator alone (``streamer.server.endings``)."""
    state = request.app[STATE]
    session_id = request.match_info["session_id"]
    credential = credential_of(request)
    peer = state.peers.get(session_id)
    if peer is not None and may_access(credential, peer.owner):
        return peer
    ending = state.endings.get(session_id) if peer is None else None
    if ending is not None and may_access(credential, ending.owner):
        message = f"session {session_id!r} ended: {ending.sentence}"
        raise RequestError(410, message, fields={"ended": ending.reason})
    raise RequestError(404, f"no session {session_id!r}")


async def handle_stats(request: web.Request) -> web.Response:
    peer = _peer(request)
    body: dict[str, Any] = {
        "session_id": peer.id,
        "role": peer.role,
        "room": peer.room.id,
        "viewers": len(peer.room.viewers),
        "connection": peer.pc.connectionState if peer.pc is not None else "local",
        "session": peer.session.snapshot(),
        "tracks": [
            {
                "name": s.name,
                "offered": s.offered,
                "queued": len(s),
                "delivered": s.delivered,
                "dropped": s.dropped,
            }
            for s in peer.subscriptions
        ],
        # The page's lip sync maps the RTP timestamps it plays to the mic time with these.
        "clocks": media_clocks(peer),
    }
    return web.json_response(body)


async def handle_interrupt(request: web.Request) -> web.Response:
    peer = _peer(request)
    if peer.role != "publisher":
        raise RequestError(403, "only the room's publisher can interrupt")
    frame = peer.session.interrupt()
    return web.json_response({"interrupted": True, "session_id": peer.id, "from_tick": frame})


async def handle_hangup(request: web.Request) -> web.Response:
    peer = _peer(request)
    await close_peer(request.app[STATE], peer)
    return web.json_response({"closed": True, "session_id": peer.id})


def page(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A static page, ``no-cache``; a 404 naming it when it is not installed."""
    installed = path.is_file()  # checked once, at start-up

    async def handler(request: web.Request) -> web.StreamResponse:
        if not installed:
            raise web.HTTPNotFound(reason=f"page {path.name} is not installed")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler
