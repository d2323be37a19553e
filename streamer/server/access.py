"""Who may do what, over HTTP: every request's credential, established before its body is read.

* ``authenticate_requests(cluster)``, a middleware in front of the handlers (and of the
  forwarding between workers): a request for a protected route must carry
  ``Authorization: Bearer <token>`` that ``ServerState.auth`` accepts, else 401 with
  ``WWW-Authenticate: Bearer`` and nothing of its body read. The pages, their assets, the
  poster and the health routes (``PUBLIC_ROUTES``) are open to all: a browser must load a page
  before it can hold a token. Every other route is protected, routes added later included.
  On a worker's internal port the hop secret is checked instead (403 without it) and the
  credential is the one the receiving worker established (``CREDENTIAL_HEADER``).
* ``authorize_offer``: what an offer may do with that credential: a viewer credential cannot
  publish (403); a room token acts in its own room only (403 for another), and a publisher
  offer without a room opens the token's room.
* ``may_access``: a session belongs to the credential subject that created it; anyone else is
  told it does not exist (404, the same answer as for an id nobody has).

With nothing configured (``Authenticator.open``) every request is ``auth.OPEN``: the
unguessable session id is then the only capability, which ``serve`` allows on loopback only.
Nothing here logs or echoes a token.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from streamer.server.auth import ROLES, AuthError, Credential, bearer_token, mint_room_token
from streamer.server.cluster import CREDENTIAL_HEADER, HOP_HEADER, Cluster
from streamer.server.errors import RequestError, error_response
from streamer.server.offers import Offer
from streamer.server.state import STATE, ServerState

log = logging.getLogger(__name__)

CREDENTIAL = web.RequestKey("credential", Credential)
# Routes (canonical paths) anyone may request: the pages and what they load before a token.
PUBLIC_ROUTES = frozenset({"/", "/viewer", "/static/{path}", "/avatar.jpg", "/healthz", "/readyz"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="msadtalker"'}


def authenticate_requests(cluster: Cluster | None = None) -> Middleware:
    """The middleware that establishes ``request[CREDENTIAL]`` (see the module docstring)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if cluster is not None and cluster.is_internal(request):
            if not cluster.hop_ok(request.headers.get(HOP_HEADER)):
                log.info(
                    "refused %s %s on the internal port: no hop secret",
                    request.method,
                    request.path,
                )
                count_failure(request, "hop")
                raise RequestError(403, "this port answers the server's own workers only")
            credential = decode_credential(request.headers.get(CREDENTIAL_HEADER))
            if credential is not None:
                request[CREDENTIAL] = credential
            return await handler(request)
        if request.method == "OPTIONS" or not _protected(request):
            return await handler(request)
        try:
            token = bearer_token(request.headers.get("Authorization"))
            request[CREDENTIAL] = request.app[STATE].auth.authenticate(token)
        except AuthError as exc:
            log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
            count_failure(request, exc.reason)
            return _refusal(exc)
        return await handler(request)

    return middleware


def _protected(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    # No resource: no route matched; the 404/405 that follows reveals nothing to protect.
    return resource is not None and resource.canonical not in PUBLIC_ROUTES


def _refusal(exc: AuthError) -> web.Response:
    response = error_response(exc.status, str(exc))
    if exc.status == 401:
        response.headers.update(CHALLENGE)
    return response


def count_failure(request: web.Request, reason: str) -> None:
    """One more refusal in ``msadtalker_auth_failures{reason}``."""
    request.app[STATE].metrics.auth_failures.labels(reason=reason).inc()


def credential_of(request: web.Request) -> Credential:
    """The credential ``authenticate_requests`` established (401 when there is none: a
    forwarded request without one, or a route that was not protected)."""
    credential = request.get(CREDENTIAL)
    if credential is None:
        raise RequestError(401, "a bearer token is required")
    return credential


def authorized_offer(request: web.Request, offer: Offer) -> Offer:
    """``authorize_offer`` with the request's credential; a refusal is a JSON 403, counted."""
    try:
        return authorize_offer(credential_of(request), offer)
    except AuthError as exc:
        log.info("refused an offer from %s: %s", request.remote, exc)
        count_failure(request, exc.reason)
        raise RequestError(exc.status, str(exc)) from None


def authorize_offer(credential: Credential, offer: Offer) -> Offer:
    """``offer`` as ``credential`` may make it (a room token's publisher offer without a room
    opens the token's room); ``AuthError`` 403 when it may not."""
    if not credential.allows(offer.role):
        message = f"a {credential.role} token cannot act as {offer.role}"
        raise AuthError(403, message, "forbidden")
    if credential.room is None:
        return offer
    if offer.room is None and offer.role == "publisher":
        return dataclasses.replace(offer, room=credential.room)
    if offer.room != credential.room:
        raise AuthError(403, "this token is for another room", "forbidden")
    return offer


def may_access(credential: Credential, owner: str) -> bool:
    """Whether ``credential`` may read or control a session created by subject ``owner``."""
    return credential.subject == owner


def viewer_link(state: ServerState, room: str) -> str:
    """The watch-only link a publisher is given: with a token secret, it carries a viewer
    token for ``room`` alone (``auth.viewer_link_ttl_s``), never the publisher's own token."""
    link = f"/viewer?room={room}"
    ttl = state.config.auth.viewer_link_ttl_s
    secret = state.config.auth.token_secret
    if not secret or ttl <= 0:
        return link
    return f"{link}&token={mint_room_token(secret, 'viewer', room, ttl, time.time())}"


def encode_credential(credential: Credential) -> str:
    """``credential`` as the ``CREDENTIAL_HEADER`` of a forwarded request (ASCII JSON)."""
    fields = {"role": credential.role, "subject": credential.subject, "room": credential.room}
    return json.dumps(fields, separators=(",", ":"))


def decode_credential(text: str | None) -> Credential | None:
    """The credential a forwarding worker sent; ``None`` when absent or not one."""
    if not text:
        return None
    try:
        fields = json.loads(text)
        role, subject, room = fields["role"], fields["subject"], fields["room"]
    except (ValueError, KeyError, TypeError):
        return None
    if role not in ROLES or not isinstance(subject, str) or not isinstance(room, str | None):
        return None
    return Credential(role=role, subject=subject, room=room)
