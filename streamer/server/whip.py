"""WHIP ingest (RFC 9725): ``POST /whip/{room}`` with an ``application/sdp`` offer publishes
a microphone (OBS 30+, any WHIP client) in ``room``: the room opens, its avatar is driven by
that audio, and viewers watch it over WHEP (``whep``), ``/offer`` or the ``/viewer`` page.

The bearer token is a publisher token (a room token acts in its own room alone). The answer is
``201 Created`` with ``Location: /whip/resource/{id}``; ``DELETE`` on it ends the session and
closes the room's viewers. Video in the offer is answered ``inactive`` (never decoded); the
avatar's speech goes back only on a ``sendrecv`` audio m-line (OBS offers ``sendonly``). The
shared HTTP parts are in ``wish``.
"""

from __future__ import annotations

from aiohttp import web

from streamer.server.wish import add_routes, open_session


async def handle_whip(request: web.Request) -> web.Response:
    return await open_session(request, "publisher")


def add_whip_routes(app: web.Application) -> None:
    add_routes(app, "publisher", handle_whip)
