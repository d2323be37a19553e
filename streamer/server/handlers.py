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

from streamer.server.errors import RequestError
from streamer.server.offers import Offer, OfferError, max_body_bytes, parse_offer
from streamer.server.peers import close_peer, negotiate
from streamer.server.poster import poster_jpeg
from streamer.server.rooms import Room
from streamer.server.state import STATE, Peer

log = logging.getLogger(__name__)

OFFER = web.RequestKey("offer", Offer)  # the request's offer, once read (``read_offer``)
RETRY_LATER = {"Retry-After": "5"}


async def read_offer(request: web.Request) -> Offer:
    """The checked offer in the request body; read once (the forwarding middleware may have
    read it already, to decide where it goes)."""
    cached = request.get(OFFER)
    if cached is not None:
        return cached
    max_sdp = request.app[STATE].server.max_sdp_bytes
    length = request.content_length
    if length is not None and length > max_body_bytes(max_sdp):
        raise OfferError(413, "request body too large")  # refused unread
    offer = parse_offer(await request.read(), max_sdp)
    request[OFFER] = offer
    return offer


async def handle_offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        raise RequestError(503, "server is shutting down")
    offer = await read_offer(request)
    if state.full:
        raise RequestError(429, "server is at its session limit; try again later", RETRY_LATER)
    room: Room[Peer] | None = None
    if offer.role == "viewer":
        assert offer.room is not None  # a viewer offer names its room (``parse_offer``)
        room = state.rooms.get(offer.room)
        if room is None or room.publisher is None:
            raise RequestError(404, f"no room {offer.room!r} with a publisher")
        if len(room.viewers) >= state.server.max_viewers_per_room:
            raise RequestError(429, "room is at its viewer limit", RETRY_LATER)
    state.negotiating += 1
    try:
        return web.json_response(await negotiate(state, offer, room))
    finally:
        state.negotiating -= 1


async def handle_health(request: web.Request) -> web.Response:
    """200 while a new session would be accepted; 503 when draining or full."""
    state = request.app[STATE]
    status = "draining" if state.draining else "full" if state.full else "ok"
    body: dict[str, Any] = {
        "status": status,
        "sessions": len(state.peers),
        "rooms": len(state.rooms),
        "capacity": state.server.max_sessions,
    }
    if state.cluster is not None:
        # This worker's alone (a load balancer sees N independent processes on one port).
        body.update(worker=state.cluster.index, workers=len(state.cluster), load=state.load)
    return web.json_response(body, status=200 if status == "ok" else 503)


async def handle_poster(request: web.Request) -> web.Response:
    """The avatar at rest as a JPEG (``streamer.server.poster``)."""
    try:
        jpeg = await poster_jpeg(request.app[STATE])
    except Exception:
        log.exception("rendering the avatar poster failed")
        raise RequestError(404, "the avatar picture is not available") from None
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})


def _peer(request: web.Request) -> Peer:
    peer = request.app[STATE].peers.get(request.match_info["session_id"])
    if peer is None:
        raise RequestError(404, f"no session {request.match_info['session_id']!r}")
    return peer


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
            {"name": s.name, "queued": len(s), "delivered": s.delivered, "dropped": s.dropped}
            for s in peer.subscriptions
        ],
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
