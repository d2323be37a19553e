"""What WHIP ingest (``whip``) and WHEP egress (``whep``) share over HTTP, and the ICE servers
route of the pages.

A WHIP or WHEP session is an ordinary peer (``peers.negotiate``: a publisher that opens its
room, or a viewer of a room), reached through the offer machinery of ``POST /offer`` (offer
budget, offers still connecting, capacity, the access rules, metrics) with a bare SDP body:

* ``open_session``: ``201 Created``, the SDP answer, ``Location`` of the session's resource
  (``/whip/resource/{id}``, ``/whep/resource/{id}``: the id is the session id, so
  ``/sessions/{id}`` reads its figures too, and the worker prefix it carries routes every
  follow-up to its owner), an ``ETag`` for its ICE session and the ICE servers as RFC 9725
  ``Link`` headers.
* ``delete_resource``: ``DELETE`` ends it (the creator's credential only: anyone else is told
  it does not exist); ``refuse_patch``: ``PATCH`` is ``405`` with ``Allow``: the answer
  carries every candidate (aiortc does not trickle) and ICE restarts are not offered, which
  clients must accept (RFC 9725 section 4.3.1).
* ``options``: ``204`` with ``Allow`` and ``Accept-Post``, plus the ``Link`` ICE servers
  when the request carries a valid token (never to anyone: they may hold TURN credentials).
* ``handle_ice_servers``: ``GET /ice-servers``, ``{"iceServers": [...]}`` for the pages.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from streamer.server.access import authorized_offer, credential_of, may_access
from streamer.server.auth import AuthError, bearer_token
from streamer.server.errors import RequestError
from streamer.server.handlers import answer_offer
from streamer.server.ice import as_json, ice_servers, link_headers
from streamer.server.offers import Offer, OfferError, Role
from streamer.server.peers import close_peer
from streamer.server.state import STATE, Peer
from streamer.server.wish_offers import SDP_CONTENT_TYPE, parse_wish_offer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROOM = "room"  # the path variable of ``POST /whip/{room}`` and ``POST /whep/{room}``
SESSION_ID = "session_id"  # of the resource routes (what the forwarding middleware reads)
PROTOCOLS: dict[Role, str] = {"publisher": "whip", "viewer": "whep"}
NO_STORE = {"Cache-Control": "no-store"}  # answers that may hold TURN credentials


def resource_path(role: Role, session_id: str) -> str:
    return f"/{PROTOCOLS[role]}/resource/{session_id}"


async def read_wish_offer(request: web.Request, role: Role) -> Offer:
    """The checked SDP offer of a WHIP/WHEP ``POST``, as the caller's credential may make it;
    refused unread when it announces the wrong type or too many bytes."""
    credential_of(request)  # 401 before anything is read
    max_sdp = request.app[STATE].server.max_sdp_bytes
    room = request.match_info[ROOM]
    if request.content_type != SDP_CONTENT_TYPE:
        raise OfferError(415, f"Content-Type must be {SDP_CONTENT_TYPE} (the SDP offer itself)")
    length = request.content_length
    if length is not None and length > max_sdp:
        raise OfferError(413, f"SDP larger than {max_sdp} bytes")
    try:
        body = await request.read()
    except web.RequestPayloadError:
        raise OfferError(400, "request body could not be read") from None
    offer = parse_wish_offer(role, body, request.content_type, room, max_sdp)
    return authorized_offer(request, offer)


async def open_session(request: web.Request, role: Role) -> web.Response:
    """``POST /whip/{room}`` (``role="publisher"``) or ``POST /whep/{room}`` (``"viewer"``)."""
    state = request.app[STATE]
    _, answer = await answer_offer(request, lambda r: read_wish_offer(r, role))
    protocol = PROTOCOLS[role]
    state.metrics.wish_sessions.labels(protocol=protocol).inc()
    sdp: str = answer["sdp"]
    headers: CIMultiDict[str] = CIMultiDict(NO_STORE)
    headers["Location"] = resource_path(role, answer["session_id"])
    # Names this ICE session (RFC 9725 section 4.3.1); there is one per resource here.
    headers["ETag"] = '"' + hashlib.sha256(sdp.encode()).hexdigest()[:32] + '"'
    for link in link_headers(ice_servers(state.config, time.time())):
        headers.add("Link", link)
    return web.Response(
        status=201, body=sdp.encode(), content_type=SDP_CONTENT_TYPE, headers=headers
    )


def _resource(request: web.Request, role: Role) -> Peer:
    """The WHIP (publisher) or WHEP (viewer) session the path names, if the caller created
    it; to anyone else it does not exist (404). One that ended a short while ago is a 410
    naming why, to its creator (``streamer.server.endings``)."""
    state = request.app[STATE]
    session_id = request.match_info[SESSION_ID]
    credential = credential_of(request)
    peer = state.peers.get(session_id)
    if peer is not None and peer.role == role and may_access(credential, peer.owner):
        return peer
    ending = state.endings.get(session_id) if peer is None else None
    if ending is not None and may_access(credential, ending.owner):
        message = f"session {session_id!r} ended: {ending.sentence}"
        raise RequestError(410, message, fields={"ended": ending.reason})
    raise RequestError(404, f"no {PROTOCOLS[role].upper()} resource {session_id!r}")


def delete_resource(role: Role) -> Handler:
    """``DELETE /whip/resource/{session_id}`` (or ``/whep/...``): the session ends."""

    async def handler(request: web.Request) -> web.Response:
        peer = _resource(request, role)
        await close_peer(request.app[STATE], peer)
        return web.json_response({"closed": True, "session_id": peer.id})

    return handler


def refuse_patch(role: Role) -> Handler:
    """``PATCH`` on a resource: 405, the session goes on (see the module docstring)."""

    async def handler(request: web.Request) -> web.Response:
        _resource(request, role)
        raise RequestError(
            405,
            "trickle ICE and ICE restarts are not supported: the answer carries every candidate",
            headers={"Allow": "DELETE"},
        )

    return handler


async def options(request: web.Request) -> web.Response:
    """``OPTIONS /whip/{room}`` or ``/whep/{room}`` (the access middleware lets every
    ``OPTIONS`` through: the token is checked here, and only decides the ``Link`` headers)."""
    state = request.app[STATE]
    headers: CIMultiDict[str] = CIMultiDict(NO_STORE)
    headers.update({"Allow": "OPTIONS, POST", "Accept-Post": SDP_CONTENT_TYPE})
    try:
        state.auth.authenticate(bearer_token(request.headers.get("Authorization")))
    except AuthError:
        return web.Response(status=204, headers=headers)
    for link in link_headers(ice_servers(state.config, time.time())):
        headers.add("Link", link)
    state.metrics.ice_servers_handed.labels(route="options").inc()
    return web.Response(status=204, headers=headers)


async def handle_ice_servers(request: web.Request) -> web.Response:
    """``GET /ice-servers``: what a page passes to ``new RTCPeerConnection`` (authenticated:
    TURN credentials are for callers of this server only)."""
    credential_of(request)
    state = request.app[STATE]
    servers = as_json(ice_servers(state.config, time.time()))
    state.metrics.ice_servers_handed.labels(route="ice-servers").inc()
    return web.json_response({"iceServers": servers}, headers=NO_STORE)


def add_routes(app: web.Application, role: Role, handler: Handler) -> None:
    """``POST``/``OPTIONS /{protocol}/{room}`` and ``DELETE``/``PATCH`` on its resources;
    the ``POST`` route is named after the protocol (``limits`` spends an offer on it)."""
    protocol = PROTOCOLS[role]
    app.router.add_post(f"/{protocol}/{{{ROOM}}}", handler, name=protocol)
    app.router.add_route("OPTIONS", f"/{protocol}/{{{ROOM}}}", options)
    resource = f"/{protocol}/resource/{{{SESSION_ID}}}"
    app.router.add_delete(resource, delete_resource(role))
    app.router.add_patch(resource, refuse_patch(role))
