"""WHEP egress (draft-ietf-wish-whep): ``POST /whep/{room}`` with an ``application/sdp`` offer
(video and audio ``recvonly``) watches ``room``: the avatar video and its voice, in sync
(each video frame carries its own audio), from the room's one pipeline (OBS's WHEP source, a
player, an SFU pulling the stream).

The bearer token is a viewer token (a publisher token may watch too; a room token its own
room alone). ``201 Created`` with ``Location: /whep/resource/{id}``; ``DELETE`` on it ends
the session. The room must have a publisher (404 otherwise); when it closes, its WHEP
sessions are closed with it. The shared HTTP parts are in ``wish``.
"""

from __future__ import annotations

from aiohttp import web

from streamer.server.wish import add_routes, open_session


async def handle_whep(request: web.Request) -> web.Response:
    return await open_session(request, "viewer")


def add_whep_routes(app: web.Application) -> None:
    add_routes(app, "viewer", handle_whep)
