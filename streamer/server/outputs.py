"""A room's outputs over HTTP: RTMP pushes and recordings (``streamer.broadcast``).

::

    POST   /rooms/{room}/outputs               {"kind": "rtmp", "url": "rtmp[s]://..."}
                                               or {"kind": "record"} -> 201 + the output
    GET    /rooms/{room}/outputs               {"outputs": [...]}: each one's state, figures
    GET    /rooms/{room}/outputs/{output_id}   one output
    DELETE /rooms/{room}/outputs/{output_id}   stop it (a recording is finalised) -> 200

Only the room's owner: a publisher credential (a viewer token is a 403; a room token for
another room is a 403), of the subject that published the room; to anyone else the room does
not exist (404, the same answer as for a room nobody has, so rooms cannot be probed). An
output's target is shown redacted (``streamer.broadcast.targets``): a stream key never
appears in an answer or a log line.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from streamer.broadcast.kinds import Output
from streamer.broadcast.room_outputs import TooManyOutputs
from streamer.broadcast.targets import OutputTargetError
from streamer.server.access import count_failure, credential_of, may_access
from streamer.server.errors import RequestError
from streamer.server.rooms import Room
from streamer.server.state import STATE, Peer

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024  # a kind and a URL


def add_output_routes(app: web.Application) -> None:
    app.router.add_post("/rooms/{room}/outputs", handle_add_output)
    app.router.add_get("/rooms/{room}/outputs", handle_list_outputs)
    app.router.add_get("/rooms/{room}/outputs/{output_id}", handle_get_output)
    app.router.add_delete("/rooms/{room}/outputs/{output_id}", handle_delete_output)


def _owned_room(request: web.Request) -> Room[Peer]:
    """The room the path names, if the caller may control its outputs (see the docstring)."""
    state = request.app[STATE]
    room_id = request.match_info["room"]
    credential = credential_of(request)
    if not credential.allows("publisher"):
        count_failure(request, "forbidden")
        raise RequestError(403, "a viewer token cannot control a room's outputs")
    if not credential.allows_room(room_id):
        count_failure(request, "forbidden")
        raise RequestError(403, "this token is for another room")
    room = state.rooms.get(room_id)
    publisher = room.publisher if room is not None else None
    if room is None or publisher is None or publisher.closed:
        raise RequestError(404, f"no room {room_id!r} with a publisher")
    if not may_access(credential, publisher.owner):
        raise RequestError(404, f"no room {room_id!r} with a publisher")
    return room


def _output(request: web.Request, room: Room[Peer]) -> Output:
    output_id = request.match_info["output_id"]
    output = request.app[STATE].broadcasts.get(room.id, output_id)
    if output is None:
        raise RequestError(404, f"no output {output_id!r} in room {room.id!r}")
    return output


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError(413, "request body too large")
    if request.content_type != "application/json":
        raise RequestError(415, "Content-Type must be application/json")
    try:
        raw = await request.read()  # bounded by the app's client_max_size (413 beyond)
    except web.RequestPayloadError:
        raise RequestError(400, "request body could not be read") from None
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(413, "request body too large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, 'the body must be a JSON object: {"kind": ..., ...}')
    return body


async def handle_add_output(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        raise RequestError(503, "server is shutting down", headers={"Retry-After": "5"})
    room = _owned_room(request)
    body = await _body(request)
    assert room.publisher is not None
    try:
        output = state.broadcasts.add(room.id, room.publisher.session, body)
    except OutputTargetError as exc:
        status = 409 if isinstance(exc, TooManyOutputs) else 400
        raise RequestError(status, str(exc)) from None
    location = f"/rooms/{room.id}/outputs/{output.id}"
    return web.json_response(output.status(), status=201, headers={"Location": location})


async def handle_list_outputs(request: web.Request) -> web.Response:
    room = _owned_room(request)
    outputs = request.app[STATE].broadcasts.of_room(room.id)
    return web.json_response({"room": room.id, "outputs": [o.status() for o in outputs]})


async def handle_get_output(request: web.Request) -> web.Response:
    room = _owned_room(request)
    return web.json_response(_output(request, room).status())


async def handle_delete_output(request: web.Request) -> web.Response:
    room = _owned_room(request)
    output = _output(request, room)
    await request.app[STATE].broadcasts.remove(room.id, output.id)
    return web.json_response(output.status())
